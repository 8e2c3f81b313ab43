"""benchmarks/gpu_check.sh --rehearse: the GPU check runs here, on the CPU at tiny sizes, before any device time.

The rehearsal is the device's command with three differences only: the CPU, tiny sizes and no carried
wheels (this environment has hkd's dependencies). It runs in a copy of the tracked files, as the device
receives them, and must leave what the device tool can bring back: at most 8 files, named plainly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import copy_tracked_files

# one rehearsal for the module's tests, in one worker
pytestmark = [pytest.mark.budget(240), pytest.mark.xdist_group("gpu_check")]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, Path]:
    root = copy_tracked_files(tmp_path_factory.mktemp("checkout"))
    out = tmp_path_factory.mktemp("out")
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--rehearse"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)
    return done, root, out


def test_rehearsal_runs_every_part(rehearsal):
    done, root, out = rehearsal
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == []
    # the default study's every training run (teacher, 2 widths x 3 methods, one seed) says where it trained
    assert len(summary["runs"]) == 7 and set(summary["runs"].values()) == {"cpu"}
    table = (out / "summary.md").read_text()
    for figure in ("default study end to end", "paper TransUNet training", "whole paper study",
                   "0.4M student inference"):
        assert figure in table
    paper = json.loads((out / "paper.json").read_text())
    assert [(j["job"], j["model"]) for j in paper["jobs"]] == [
        ("teacher", "TransUNet"), ("scratch", "0.4M"), ("distilled", "0.4M"), ("scratch", "1.5"), ("distilled", "1.5")]
    assert all(j["samples_per_s"] > 0 and 0 < j["of_peak"] for j in paper["jobs"])
    infer = json.loads((out / "inference.json").read_text())
    assert {r["model"] for r in infer["rows"]} == {"teacher", "student 0.4M", "student 4M", "student 6.7M",
                                                  "student 16M"}


def test_rehearsal_leaves_what_the_device_brings_back(rehearsal):
    """The device tool returns at most 8 files, each named in letters, digits, '.', '_' and '-'."""
    done, root, out = rehearsal
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8, sorted(p.name for p in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files)


def test_gpu_report_flags_a_run_that_trained_elsewhere(rehearsal, tmp_path):
    """A run whose metrics.json names another device than asked is a problem, not a passing check."""
    done, root, out = rehearsal
    study = root / "results" / "gpu_check" / "default"
    shutil.copytree(out, tmp_path / "out")
    check = subprocess.run([sys.executable, "benchmarks/gpu_report.py", "--out", str(tmp_path / "out"), "--study", str(study),
                            "--expect", "cuda"], cwd=root, capture_output=True, text=True)
    assert check.returncode == 1
    assert "runs not on cuda" in check.stdout
