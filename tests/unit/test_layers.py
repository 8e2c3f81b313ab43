"""The package's layers: a module imports only from layers below its own (or from its own subpackage).

A lower layer that imports a higher one makes every workflow job of the lower code depend on the higher
code (the rules declare the imported files as inputs), so an edit up there reruns jobs it cannot affect.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hkd"

# Lowest first. A new top-level module or subpackage of hkd takes its place here.
LAYERS = (
    ("errors", "run_files", "chains", "configfile", "workflow_deps", "extras", "record", "trust"),
    ("guard",),
    ("io", "lock", "devices"),
    ("data", "models"),
    ("distill", "explain", "infer"),
    ("train",),
    ("evaluate",),
    ("deploy", "figures"),
    ("study",),
    ("config_checks",),  # the config checks count a download's cases where the study's layout puts it
    ("commands",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str:
    """`hkd.data.sources` -> `data`."""
    return module.split(".")[1]


def _imports() -> list[tuple[str, str, int]]:
    """(importing file, imported hkd module, line) for every import of hkd, module level or inside functions."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "hkd":  # from hkd import distill
                names = [f"hkd.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.extend((str(path.relative_to(PACKAGE.parent)), name, node.lineno)
                         for name in names if name.startswith("hkd."))
    return found


def _own_top(file: str) -> str | None:
    parts = Path(file).with_suffix("").parts
    return parts[1] if len(parts) > 1 and parts[1] != "__init__" else None


def _uphill(file: str, module: str) -> bool:
    """Whether `file` importing `module` goes to another package of the same or a higher layer."""
    own, other = _own_top(file), _top(module)
    return own is not None and other != own and RANK[other] >= RANK[own]


def test_every_module_has_a_layer():
    tops = {_own_top(str(p.relative_to(PACKAGE.parent))) for p in PACKAGE.rglob("*.py")} - {None}
    assert tops - set(RANK) == set(), "place these modules in LAYERS (tests/unit/test_layers.py)"


def test_no_import_runs_uphill():
    uphill = [f"{file}:{line} imports {module} (layer {RANK[_top(module)]} above {RANK[_own_top(file)]})"
              for file, module, line in _imports()
              if _uphill(file, module)]
    assert uphill == []


@pytest.mark.parametrize("file, module, expected", [
    ("hkd/data/x.py", "hkd.train.trainer", True),  # a reader importing the trainer
    ("hkd/train/x.py", "hkd.deploy.export", True),  # up
    ("hkd/deploy/x.py", "hkd.figures.style", True),  # same layer, other package
    ("hkd/figures/x.py", "hkd.train.gradient_balance", False),
    ("hkd/data/x.py", "hkd.data.sources", False),
])
def test_the_rule_flags_what_it_must(file, module, expected):
    assert _uphill(file, module) is expected
