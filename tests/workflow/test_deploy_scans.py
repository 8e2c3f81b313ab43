"""``deploy.scans``: each scan is segmented by each model in a job of its own, on a copy of the shared
finished study. A bad scan fails only its own jobs, named in their logs; the others' segmentations and
earlier results stay; a scan replaced in place is segmented again, and only it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from helpers import snakemake

pytestmark = pytest.mark.slow


def _segment_jobs(root, *args) -> int:
    out = snakemake(root, "-n", "--cores", "1", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    found = re.search(r"^segment_scan\s+(\d+)$", out.stdout + out.stderr, re.M)
    return int(found.group(1)) if found else 0


@pytest.mark.budget(300)
def test_each_scan_is_its_own_job_a_bad_one_fails_alone_and_a_replaced_one_is_segmented_again(default_study,
                                                                                              tmp_path):
    root = tmp_path / "study"
    subprocess.run(["cp", "-a", str(default_study.root), str(root)], check=True)
    out = root / default_study.config["out"]
    images = sorted((out / "raw").rglob("img*.nii.gz"))
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(images[0], scans / "a.nii.gz")
    (scans / "b.nii.gz").write_bytes(images[1].read_bytes()[:300])  # truncated
    config = ("--config", f"deploy={{scans: {scans}}}")
    models = ["teacher"] + [f"student_w{w}" for w in default_study.config["students"]["widths"]]

    run = snakemake(root, "--cores", "2", "--keep-going", *config)
    assert run.returncode != 0
    for model in models:
        folder = out / "segmentations" / model
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["a.json", "a.nii.gz"]
        log = (out / "logs" / "segment" / model / "b.log").read_text()
        assert "b.nii.gz" in log and "error" in log, log
    first = {m: (out / "segmentations" / m / "a.nii.gz").stat().st_mtime_ns for m in models}

    shutil.copy(images[1], scans / "b.nii.gz")  # the user fixes b: only b's jobs run, a's results stay
    assert _segment_jobs(root, *config) == len(models)
    assert snakemake(root, "--cores", "2", *config).returncode == 0
    assert all((out / "segmentations" / m / "a.nii.gz").stat().st_mtime_ns == first[m] for m in models)
    assert _segment_jobs(root, *config) == 0

    time.sleep(0.01)
    shutil.copy(images[2], scans / "a.nii.gz")  # a replaced in place by another scan: segmented again
    os.utime(scans / "a.nii.gz")
    assert _segment_jobs(root, *config) == len(models)
