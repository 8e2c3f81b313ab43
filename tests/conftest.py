"""Shared fixtures: tiny NIfTI cases, a tiny prepared dataset and teacher, and one completed study.

Plain values (model specs, study configs, ``merge``) live in ``helpers.py``; they are re-exported here
for the test files that import them from ``conftest``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from helpers import (CLASSES, LABEL_MAP, REAL_CT, REPO, STUDY, THREADS, TINY_STUDENT, TINY_TEACHER,  # noqa: F401
                     copy_tracked_files, merge, snakemake, snakemake_as_plain_install,
                     study_config)

pytest_plugins = ["timing", "by_module"]

LPS_AFFINE = np.diag([-0.8, -0.8, 3.0, 1.0])
RAS_AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])


@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test computes with at most ``THREADS`` torch threads (the CI machine has 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(THREADS, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One intra-op thread, for tests of tiny tensors (more only oversubscribe shared CPUs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_case(shape=(32, 32, 8), seed=0):
    """A small image (int16 HU) with a 'liver' block (label 6) on the patient's right."""
    rng = np.random.default_rng(seed)
    image = rng.normal(-50, 20, shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[2:10, 8:24, 1:7] = 6  # voxel x small = patient right for an LPS affine
    image[label == 6] = 100
    return image, label


def write_nifti(path: Path, array: np.ndarray, affine=LPS_AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def write_rawdata(root: Path, n: int = 5, shape=(32, 32, 8)) -> Path:
    """A RawData folder with ``n`` small cases, alternating LPS and RAS affines."""
    for i in range(1, n + 1):
        image, label = make_case(shape, seed=i)
        affine = LPS_AFFINE
        if i % 2 == 0:  # the same anatomy stored in RAS voxel order
            image, label, affine = image[::-1, ::-1].copy(), label[::-1, ::-1].copy(), RAS_AFFINE
        write_nifti(root / "Training" / "img" / f"img{i:04d}.nii.gz", image, affine)
        write_nifti(root / "Training" / "label" / f"label{i:04d}.nii.gz", label, affine)
    return root


@pytest.fixture
def rawdata(tmp_path) -> Path:
    return write_rawdata(tmp_path / "RawData")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A small prepared dataset (5 cases of 48x48x12, slices at 32x32)."""
    from hkd.data.preprocess import prepare_dataset
    from hkd.data.readers import iter_cases

    root = tmp_path_factory.mktemp("data")
    write_rawdata(root / "RawData", n=5, shape=(48, 48, 12))
    split = {"train": ["0001", "0002", "0003"], "val": ["0004"], "test": ["0005"]}
    prepare_dataset(iter_cases(root / "RawData", "rawdata", sum(split.values(), [])), split, root / "prep",
                    image_size=32, hu_window=(-125, 275), label_map=LABEL_MAP, classes=CLASSES, progress=False)
    return root / "prep"


@pytest.fixture(scope="session")
def teacher_ckpt(prepared, tmp_path_factory) -> Path:
    """A tiny TransUNet trained for one epoch on ``prepared``."""
    from hkd.train.trainer import train

    out = tmp_path_factory.mktemp("teacher")
    train({"model": TINY_TEACHER, "epochs": 1, "batch_size": 8, "device": "cpu", "optimizer": "adamw",
           "lr": 0.002}, prepared, out, progress=False)
    return out / "best.pt"


@pytest.fixture(scope="session")
def student_ckpt(prepared, tmp_path_factory) -> Path:
    """A tiny SqueezeUNet trained for one epoch on ``prepared``."""
    from hkd.train.trainer import train

    out = tmp_path_factory.mktemp("student")
    train({"model": TINY_STUDENT, "epochs": 1, "batch_size": 8, "device": "cpu", "optimizer": "adamw", "lr": 0.003},
          prepared, out, progress=False)
    return out / "best.pt"


@dataclass
class Study:
    """A completed study in a copy of the repository (``root``), its outputs under ``out``."""

    root: Path
    out: Path
    config: dict
    seconds: float


@pytest.fixture(scope="session")
def default_study(tmp_path_factory) -> Study:
    """The default study reduced by ``helpers.STUDY`` (every rule and default method, 2-4 min), run with
    ``snakemake --cores 2`` in a copy of the repository's tracked files. Each ``hkd`` job runs with
    ``PYTHONPROFILEIMPORTTIME=1``, so its log lists the modules it imported (see test_rerun.py).
    Shared by the report and rerun tests; tests that edit the copy restore it (see test_rerun.py)."""
    root = copy_tracked_files(tmp_path_factory.mktemp("study"))
    config = study_config(STUDY, "results/study")
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    started = time.time()
    run = snakemake(root, "--cores", "2", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    seconds = time.time() - started
    print(f"\nshared study: {seconds:.0f} s")
    return Study(root=root, out=root / config["out"], config=config, seconds=seconds)


@pytest.fixture(scope="session")
def default_report(default_study) -> Path:
    """The shared study's report (``snakemake --report``), built once, under the plain install's rules (no
    test extras importable), for the report tests and the first-page test."""
    html = default_study.root / "report.html"
    rep = snakemake_as_plain_install(default_study.root, "--report", str(html))
    assert rep.returncode == 0, (rep.stdout + rep.stderr)[-3000:]
    return html
