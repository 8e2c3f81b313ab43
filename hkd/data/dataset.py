"""Reading the prepared dataset: slice sets for training/validation and volumes for evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from hkd.errors import DataError


@dataclass
class SliceSet:
    image: torch.Tensor  # (N, 1, S, S) float32 in [0, 1]
    label: torch.Tensor  # (N, S, S) int64
    case: list[str]
    index: np.ndarray

    def __len__(self) -> int:
        return self.image.shape[0]


def read_meta(prepared: str | Path) -> dict:
    path = Path(prepared) / "dataset.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a prepared dataset description ({exc})") from exc


def load_slices(prepared: str | Path, part: str) -> SliceSet:
    """Load the ``train`` or ``val`` slices of a prepared dataset into memory."""
    path = Path(prepared) / f"{part}.h5"
    try:
        with h5py.File(path, "r") as f:
            image = torch.from_numpy(f["image"][()])[:, None]
            label = torch.from_numpy(f["label"][()].astype(np.int64))
            case = [c.decode() if isinstance(c, bytes) else str(c) for c in f["case"][()]]
            index = f["slice"][()]
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a prepared slice file ({exc})") from exc
    return SliceSet(image, label, case, index)


def load_volume(prepared: str | Path, case_id: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(image, label, spacing) of a validation/test case at native resolution."""
    path = Path(prepared) / "volumes" / f"{case_id}.h5"
    try:
        with h5py.File(path, "r") as f:
            return f["image"][()], f["label"][()], tuple(float(s) for s in f.attrs["spacing"])
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a prepared volume ({exc})") from exc
