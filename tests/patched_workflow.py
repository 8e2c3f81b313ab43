"""The real workflow run on ``config.yaml`` patched for one test, with its outputs in the test's folder, and
what a dry run plans."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import helpers
import yaml
from helpers import REPO, merge

# A phantom small enough for real data jobs in a test.
TINY_DATA = {"phantom": {"cases": 3, "size": 32, "slices": [4, 5]}, "image_size": 16}


def snakemake_patched(tmp_path: Path, patch: dict, *args) -> subprocess.CompletedProcess:
    """Snakemake on the real workflow with config.yaml patched by ``patch``, outputs under tmp_path."""
    cfg = merge(yaml.safe_load((REPO / "config.yaml").read_text()), {"out": str(tmp_path / "out"), **patch})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return helpers.snakemake(REPO, "--configfile", str(path), "--cores", "1", *args, directory=tmp_path)


def planned(result: subprocess.CompletedProcess) -> set[str]:
    """The rules a dry run plans."""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return set()
    table = text.split("Job stats:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) not in ("total", "all")}


def ran(result: subprocess.CompletedProcess) -> bool:
    """True when the jobs ran; a failed run fails the test with the end of its output."""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return True
