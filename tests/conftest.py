"""Shared fixtures: tiny NIfTI cases in the Synapse RawData layout."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_CT = REPO.parent / "shared" / "data" / "real-ct"

torch.set_num_threads(min(2, torch.get_num_threads()))

# BTCV ids -> TransUNet's 8 organs, as in config.yaml
LABEL_MAP = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 0, 6: 5, 7: 6, 8: 7, 9: 0, 10: 0, 11: 8, 12: 0, 13: 0}
CLASSES = ["background", "spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach", "aorta",
           "pancreas"]
LPS_AFFINE = np.diag([-0.8, -0.8, 3.0, 1.0])
RAS_AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])


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
    from hkd.data.sources import iter_cases

    root = tmp_path_factory.mktemp("data")
    write_rawdata(root / "RawData", n=5, shape=(48, 48, 12))
    split = {"train": ["0001", "0002", "0003"], "val": ["0004"], "test": ["0005"]}
    prepare_dataset(iter_cases(root / "RawData", "rawdata", sum(split.values(), [])), split, root / "prep",
                    image_size=32, hu_window=(-125, 275), label_map=LABEL_MAP, classes=CLASSES, progress=False)
    return root / "prep"


TINY_TEACHER = {"arch": "transunet", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64,
                "block_units": [1, 1, 1], "resnet_width": 8, "decoder_channels": [32, 16, 8, 8]}


@pytest.fixture(scope="session")
def teacher_ckpt(prepared, tmp_path_factory) -> Path:
    """A tiny TransUNet trained for one epoch on ``prepared``."""
    from hkd.train.trainer import train

    out = tmp_path_factory.mktemp("teacher")
    train({"model": TINY_TEACHER, "epochs": 1, "batch_size": 8, "device": "cpu", "optimizer": "adamw",
           "lr": 0.002}, prepared, out, progress=False)
    return out / "best.pt"
