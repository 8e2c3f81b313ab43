"""A distillation method is one file: dropped into `hkd/distill/` of a copy of the project, the registry, a
study of every method (`workflow/configs/methods.yaml`), its jobs' code inputs and the registry's tests take it
up, with no other file edited (a figure: tests/unit/test_figures.py; a data source: tests/unit/test_ingest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import copy_tracked_files, snakemake

NEW_METHOD = '''"""Squared difference of the student's and the teacher's logits (a plain logit regression)."""

from hkd.distill import register
from hkd.distill.base import LogitsMethod


@register
class LogitRegression(LogitsMethod):
    name = "logitmse"

    @classmethod
    def option_defaults(cls) -> dict:
        return {"weight": 1.0}

    def forward(self, teacher, student, target):
        s, t = self.logits(teacher, student)
        return {"logit_mse": float(self.options["weight"]) * (s - t).pow(2).mean()}
'''


def test_a_new_method_is_one_file(tmp_path):
    root = copy_tracked_files(tmp_path / "repo")
    (root / "hkd" / "distill" / "logitmse.py").write_text(NEW_METHOD)

    # its own process, whose hkd is the copy's (this process has imported the registry already)
    plan = snakemake(root, "-n", "--configfile", "workflow/configs/methods.yaml", process=True,
                     env={**os.environ, "PYTHONPATH": str(root)})
    assert plan.returncode == 0, plan.stdout + plan.stderr
    jobs = plan.stdout.split("\nrule ")  # one job a piece, its rule name first
    trained = [job for job in jobs if job.startswith("train_student:") and "method=logitmse," in job]
    assert len(trained) == 2 * 3  # both widths, every seed
    assert all("hkd/distill/logitmse.py" in job for job in trained)  # editing it reruns exactly its runs
    others = [job for job in jobs if job.startswith("train_student:") and "method=logitmse," not in job]
    assert others and not any("hkd/distill/logitmse.py" in job for job in others)
    assert any(job.startswith("evaluate_student:") and "method=logitmse," in job for job in jobs)

    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "tests/unit/test_distill.py", "tests/unit/test_distill_methods.py"],
                               cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert collected.returncode == 0, collected.stdout + collected.stderr
    ids = [line for line in collected.stdout.splitlines() if "logitmse" in line]
    assert any("test_distill.py" in i for i in ids) and any("test_distill_methods.py" in i for i in ids), ids
