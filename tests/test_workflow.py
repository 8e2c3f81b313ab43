"""The Snakemake workflow: the DAG builds for every study config, lints clean, rejects bad config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
CONFIGS = sorted((REPO / "workflow" / "configs").glob("*.yaml"))


def snakemake(*args, cwd=REPO):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)


def test_dry_run_of_the_default_config(tmp_path):
    result = snakemake("-n", "--cores", "2", "--config", f"out={tmp_path}")
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for rule in ("phantom", "split", "prepare", "train_teacher", "train_student"):
        assert rule in out


@pytest.mark.parametrize("configfile", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_dry_run_of_each_study_config(configfile, tmp_path):
    result = snakemake("-n", "--cores", "2", "--configfile", str(configfile), "--config", f"out={tmp_path}")
    assert result.returncode == 0, result.stderr


def test_lint_has_no_findings():
    result = snakemake("--lint")
    assert result.returncode == 0 and "good condition" in result.stdout + result.stderr, result.stdout


def test_snakefmt_check():
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _with(tmp_path, patch: dict) -> list[str]:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())

    def merge(base, upd):
        for k, v in upd.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                merge(base[k], v)
            else:
                base[k] = v

    merge(cfg, patch)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["-n", "--cores", "1", "--configfile", str(path)]


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"data": {"image_size": -64}}, "image_size"),
        ({"data": {"phantom": {"cases": -1}}}, "cases"),
        ({"data": {"split": {"ratios": [0.6, 0.3, 0.2]}}}, "data.split.ratios"),
        ({"data": {"colour": "blue"}}, "colour"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"students": {"methods": ["scratch", "telepathy"]}}, "students.methods"),
        ({"data": {"hu_window": [275, -125]}}, "data.hu_window"),
        ({"data": {"source": "zip"}}, "data.path"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_invalid_config_is_rejected_naming_the_key(tmp_path, patch, message):
    result = snakemake(*_with(tmp_path, patch))
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


def test_shared_training_recipe_reaches_every_run_and_overrides_apply(tmp_path):
    """`train` is the shared recipe; `teacher.train` / `students.train` override single keys only."""
    args = _with(tmp_path, {"train": {"lr": 0.0042, "batch_size": 5}, "teacher": {"train": {"epochs": 3}},
                            "students": {"train": {"lr": 0.0007}}})
    result = snakemake(*args, "-p", "--config", f"out={tmp_path}/out")
    assert result.returncode == 0, result.stderr
    commands = [line.split("Shell command: ", 1)[1] for line in (result.stdout + result.stderr).splitlines()
                if line.startswith("Shell command: hkd train")]
    teacher = next(c for c in commands if '"arch":"transunet"' in c and '"method":"scratch"' in c)
    student = next(c for c in commands if '"arch":"squeezeunet"' in c)
    assert '"lr":0.0042' in teacher and '"epochs":3' in teacher and '"batch_size":5' in teacher
    assert '"lr":0.0007' in student and '"batch_size":5' in student
