"""A cache of the teacher's features on the training slices, so distilled runs skip the teacher.

The cache holds, for every training slice (in ``train.h5`` order), the teacher features a method
needs, as float16 maps ``(N, C, h, w)``. A distilled step then costs about a scratch step.

What it approximates: with augmentation on, the features of the *unaugmented* slice are put through
the same geometric transform as the slice (rot90/flip exactly on the grid, small rotations by
bilinear resampling), i.e. ``aug(teacher(x))`` stands in for ``teacher(aug(x))``; the teacher is
not equivariant, so the two differ (``benchmarks/distill_step.py`` measures by how much). Without
augmentation the cache is exact up to float16 rounding.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from hkd.data.cases import DataError
from hkd.data.dataset import load_slices
from hkd.io import atomic_path


@torch.no_grad()
def write_cache(teacher: torch.nn.Module, prepared: str | Path, names: list[str], out_path: str | Path,
                device: torch.device | str = "cpu", batch_size: int = 16) -> dict[str, tuple]:
    """Run ``teacher`` once over the training slices and store ``names``; returns their shapes."""
    data = load_slices(prepared, "train")
    teacher.eval().to(device)
    shapes: dict[str, tuple] = {}
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        for i in range(0, len(data), batch_size):
            feats = teacher.forward_features(data.image[i:i + batch_size].to(device), names=list(names))
            for name in names:
                arr = feats[name].float().cpu().numpy().astype(np.float16)
                if name not in f:
                    shapes[name] = arr.shape[1:]
                    f.create_dataset(name, shape=(len(data), *arr.shape[1:]), dtype="f2",
                                     chunks=(1, *arr.shape[1:]))
                f[name][i:i + len(arr)] = arr
        f.attrs["n_slices"] = len(data)
    return shapes


def load_cache(path: str | Path, names: tuple[str, ...], n_slices: int) -> dict[str, torch.Tensor]:
    """Load the cached features ``names`` (float16 tensors in memory), checking they fit the data."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs["n_slices"]) != n_slices:
                raise DataError(f"{path}: cache of {int(f.attrs['n_slices'])} slices, but the training set has "
                                f"{n_slices}; rebuild the teacher cache")
            missing = [n for n in names if n not in f]
            if missing:
                raise DataError(f"{path}: teacher features {missing} are not in the cache")
            return {n: torch.from_numpy(f[n][()]) for n in names}
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a readable teacher cache ({exc})") from exc
