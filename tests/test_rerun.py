"""Rerun only what changed: after a completed run of a tiny study, each kind of change reruns
exactly the jobs that depend on it (checked with dry runs on a copy of the workflow)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, TINY_TEACHER

pytestmark = pytest.mark.slow

TINY = {
    "out": "results/tiny",
    "data": {"phantom": {"cases": 5, "size": 64, "slices": [8, 10]}, "image_size": 32},
    "train": {"epochs": 1, "batch_size": 8, "threads": 1},
    "teacher": {"model": TINY_TEACHER, "cache": ["logits"], "train": {"epochs": 1}},
    "students": {"widths": ["0.25"], "seeds": [0], "methods": ["scratch", "logits", "latent"]},
    "report": {"n_slices": 1},
}
DATA_JOBS = {"phantom", "split", "prepare"}


def _merge(base: dict, upd: dict) -> dict:
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """A copy of the workflow and package sources with a completed tiny study."""
    root = tmp_path_factory.mktemp("wf")
    for name in ("Snakefile", "workflow", "hkd", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    cfg = _merge(yaml.safe_load((REPO / "config.yaml").read_text()), TINY)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    result = _snakemake(root, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def _snakemake(root: Path, *args):
    return subprocess.run([sys.executable, "-m", "snakemake", "--directory", str(root), "--snakefile",
                           str(root / "Snakefile"), *args], capture_output=True, text=True)


def planned_jobs(root: Path) -> dict[str, int]:
    """Rule -> job count of what a run would do now."""
    result = _snakemake(root, "-n", "--cores", "1")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    if "Nothing to be done" in out:
        print("planned jobs: none")
        return {}
    table = out.split("Job stats:", 1)[1]
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) not in ("total", "all")}
    print("planned jobs:", jobs)  # the rerun table, with `pytest -s tests/test_rerun.py`
    return jobs


def _edit_config(root: Path, patch: dict) -> None:
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(_merge(yaml.safe_load(path.read_text()), patch)))


@pytest.fixture
def restore(study):
    """Undo a test's edits so every test starts from the completed state."""
    saved = {p: p.read_bytes() for p in [study / "config.yaml", *(study / "hkd").rglob("*.py")]}
    yield study
    for p, data in saved.items():
        if p.read_bytes() != data:
            p.write_bytes(data)
    result = _snakemake(study, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]


def test_immediate_rerun_has_nothing_to_do(study):
    assert planned_jobs(study) == {}


def test_touching_inputs_without_changing_them_reruns_nothing(restore):
    for p in [restore / "hkd" / "models" / "squeezeunet.py", *(restore / "results" / "tiny" / "raw").rglob("*.gz")]:
        p.touch()
    assert planned_jobs(restore) == {}


def test_changing_one_methods_option_reruns_only_its_students(restore):
    _edit_config(restore, {"distill": {"latent": {"weight": 0.5}}})
    jobs = planned_jobs(restore)
    assert jobs["train_student"] == 1 and jobs["evaluate_student"] == 1  # the latent student only
    assert "train_teacher" not in jobs and not DATA_JOBS & set(jobs)
    assert set(jobs) <= {"train_student", "evaluate_student", "tables", "figures", "context", "hypotheses"}


def test_changing_a_teacher_setting_reruns_teacher_and_distilled_students_only(restore):
    _edit_config(restore, {"teacher": {"train": {"lr": 0.001}}})
    jobs = planned_jobs(restore)
    assert jobs["train_teacher"] == 1 and jobs["teacher_cache"] == 1
    assert jobs["train_student"] == 2  # logits and latent; not scratch
    assert not DATA_JOBS & set(jobs)


def test_editing_the_student_model_code_reruns_student_jobs(restore):
    path = restore / "hkd" / "models" / "squeezeunet.py"
    path.write_text(path.read_text() + "\n# edited\n")
    jobs = planned_jobs(restore)
    assert jobs["train_student"] == 3 and jobs["evaluate_student"] == 3
    assert not {"train_teacher", "teacher_cache", "evaluate_teacher"} & set(jobs) and not DATA_JOBS & set(jobs)


def test_editing_a_figure_function_reruns_only_figures(restore):
    path = restore / "hkd" / "figures" / "curves.py"
    path.write_text(path.read_text() + "\n# edited\n")
    jobs = planned_jobs(restore)
    assert jobs == {"figures": 1}, jobs
