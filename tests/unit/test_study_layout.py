"""hkd.study.layout: the one place a study's output paths are written."""

from __future__ import annotations

import inspect
import io
import re
import tokenize

from helpers import REPO
from hkd.study import Layout

# the top folders of a study's outputs (under `out`), as the layout writes them
OUTPUT_FOLDERS = ("logs", "benchmarks", "raw", "data", "models", "work", "cohorts", "eval", "tables", "figures",
                  "deploy", "segmentations", "mlruns")
TYPED_PATH = re.compile(r"(^|/)(" + "|".join(OUTPUT_FOLDERS) + r")/|\w\.(log|tsv|csv|md|html|json|onnx|h5|pt)\b")


def typed_path(literal: str) -> bool:
    """Whether a string literal builds an output path: names the study's root (``OUT``), an output folder or
    an output file (Snakemake placeholders such as ``{output.csv}`` aside)."""
    return "{OUT}" in literal or bool(TYPED_PATH.search(re.sub(r"\{[^{}]*\}", "", literal)))


def _string_literals(text: str) -> list[tuple[int, str]]:
    return [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.STRING]


def test_no_output_path_is_typed_outside_the_layout():
    """The rules and the other study modules take every output path from hkd/study/layout.py."""
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk")),
             *sorted(p for p in (REPO / "hkd" / "study").glob("*.py") if p.name != "layout.py")]
    typed = [f"{path.relative_to(REPO)}:{line}: {literal}" for path in files
             for line, literal in _string_literals(path.read_text()) if typed_path(literal)
             and not literal.lstrip("rbfu").startswith(('"""', "'''"))]  # docstrings may name them
    assert typed == []
    # the study's root reaches the rules only as the layout's and the output lock's
    uses = [line for path in files if path.suffix == ".smk" for line in path.read_text().splitlines()
            if re.search(r"\bOUT\b", line)]
    assert uses == ['OUT = config["out"]', "OUT_LOCK = OutLock(OUT)"], uses


def test_the_check_finds_a_typed_path():
    assert typed_path('f"{OUT}/x"') and typed_path('"results/eval/a"') and typed_path('"{out}/teacher.csv"')
    assert not typed_path('"--out {output.csv} > {log}"') and not typed_path('"../report/summary.rst"')


def test_every_path_is_under_out_and_wildcards_pass_through():
    layout = Layout("res/x")
    paths = []
    for name, member in inspect.getmembers(Layout):
        if name.startswith("_") or name in ("out",):
            continue
        if isinstance(member, property):
            paths.append(getattr(layout, name))
        elif callable(member) and name != "run_files":
            required = [p for p in inspect.signature(member).parameters.values()
                        if p.name != "self" and p.default is inspect.Parameter.empty]
            paths.append(getattr(layout, name)(*[f"{{{p.name}}}" for p in required]))
    assert len(paths) >= 20 and all(p.startswith("res/x/") for p in paths), paths
    assert layout.student_dir("{method}", "{width}", "{seed}") == "res/x/models/students/{method}/w{width}/s{seed}"
    assert layout.log("train_student", "a_w1_s0") == "res/x/logs/train_student/a_w1_s0.log"


def test_the_run_table_takes_its_folders_from_the_layout():
    from test_study import study

    s = study()
    run = s.runs.runs[0]
    assert run["dir"] == s.layout.student_dir(run["method"], run["width"], run["seed"])
    assert s.runs.eval_files[1] == s.layout.student_eval(run["name"])
    assert s.runs.teacher_input("latent") == s.layout.teacher_checkpoint
