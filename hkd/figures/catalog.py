"""The catalog of study figures, read from the figure modules of :mod:`hkd.figures.study` without importing them.

A study figure is one module of ``hkd/figures/study/``, named as the figure (it is written as
``<name>.png``), that declares its entry at its top level::

    FIGURE = Figure(function="draw", inputs=("models",), caption="overlays.rst")

``function`` is the module's function that draws the figure, called as ``function(context, out_png)``
with the study's shared :class:`hkd.figures.context.StudyContext`; ``inputs`` are the parts of the
context it reads (:data:`INPUTS`), so a study without one of them skips the figure; ``caption`` is its
caption in the report, a file of ``workflow/report/``. Adding a figure is adding its module and its
caption file: ``hkd figures`` draws every figure of the catalog and the workflow's figures rule declares
them all, with their captions.

The entries are read with :mod:`ast` (the workflow reads the catalog while it parses, where torch and
matplotlib are not imported), so an entry is written with literal values only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

#: The folder of the study figure modules.
FOLDER = Path(__file__).parent / "study"
#: The name of a figure module's entry.
ENTRY = "FIGURE"
#: What a figure may read from the study context, and where the study gets it.
INPUTS = {
    "models": "the loaded checkpoints, the selected validation slices and the models' predictions on them "
              "(hkd figures --runs/--models, --slices, --n-slices)",
    "latent_slices": "the validation slices of the latent PCA, chosen by organ coverage across patients",
    "logs": "every run's training log, every seed (hkd figures --runs/--logs)",
    "summary": "the summary table, one row per model (hkd figures --summary: summary.csv from hkd tables)",
    "cost": "each model's cost per runtime: latency, memory, FLOPs (hkd figures --cost: cost.csv from hkd cost)",
    "reliability": "each model's pooled reliability bins around the organs (hkd figures --reliability: "
                   "reliability.csv from hkd tables)",
}


@dataclass(frozen=True)
class Figure:
    """One study figure: its drawing function, the context it reads and its caption file."""

    function: str  # the function of its module that draws it: function(context, out_png) -> Path
    inputs: tuple[str, ...]  # what it reads of the study context (keys of INPUTS)
    caption: str  # its caption: workflow/report/<caption>
    name: str = ""  # its module's name, written as <name>.png (filled in by the catalog)

    @property
    def file(self) -> str:
        """The file it is written to, in the figures folder."""
        return f"{self.name}.png"


def _entry(path: Path) -> Figure:
    """The entry declared by the figure module ``path``, checked against the module's own functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    entries = [n for n in tree.body if isinstance(n, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == ENTRY for t in n.targets)]
    if len(entries) != 1:
        raise ValueError(f"{path}: a study figure module declares its entry once at its top level "
                         f"({ENTRY} = Figure(function=..., inputs=(...), caption=...)); found {len(entries)}")
    call = entries[0].value
    where = f"{path}:{entries[0].lineno}"
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", None)) == "Figure"):
        raise ValueError(f"{where}: {ENTRY} must be a Figure(...) call")
    if call.args:
        raise ValueError(f"{where}: give Figure's fields by keyword (function=, inputs=, caption=)")
    try:
        fields = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except ValueError:
        raise ValueError(f"{where}: {ENTRY}'s fields must be literal values (the catalog is read without "
                         "importing the module)") from None
    expected = {"function", "inputs", "caption"}
    if set(fields) != expected:
        raise ValueError(f"{where}: {ENTRY} needs exactly the fields {sorted(expected)}, got {sorted(fields)}")
    inputs = fields["inputs"]
    names = isinstance(inputs, (tuple, list)) and all(isinstance(i, str) for i in inputs)
    if not names:
        raise ValueError(f"{where}: inputs must be a tuple of names, got {inputs!r}")
    unknown = [i for i in inputs if i not in INPUTS]
    if unknown:
        raise ValueError(f"{where}: unknown input(s) {unknown}; known: {', '.join(INPUTS)}")
    if fields["function"] not in functions:
        raise ValueError(f"{where}: function '{fields['function']}' is not a function of {path.name}")
    if not isinstance(fields["caption"], str) or not fields["caption"].endswith(".rst"):
        raise ValueError(f"{where}: caption must name an .rst file of workflow/report/, got {fields['caption']!r}")
    return Figure(fields["function"], tuple(inputs), fields["caption"], path.stem)


def read_catalog(folder: str | Path = FOLDER) -> tuple[Figure, ...]:
    """Every figure of the figure modules in ``folder``, in the order of their names."""
    paths = sorted(p for p in Path(folder).glob("*.py") if not p.stem.startswith("_"))
    return tuple(_entry(p) for p in paths)


def check_captions(figures: tuple[Figure, ...], report_dir: str | Path) -> None:
    """Raise if a figure's caption is not a file of ``report_dir`` (the workflow's ``workflow/report``)."""
    missing = [f"{f.name} ({f.caption})" for f in figures if not (Path(report_dir) / f.caption).is_file()]
    if missing:
        raise ValueError(f"{report_dir}: no caption file for the figure(s) {', '.join(missing)}; a figure's "
                         "caption is the file its entry names")
