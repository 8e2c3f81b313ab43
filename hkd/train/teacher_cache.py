"""A file of the teacher's features on the un-augmented training slices.

The cache holds, for every training slice (in ``train.h5`` order), the teacher features a method
needs, as float16 maps ``(N, C, h, w)``, with where each map lives (its
:class:`~hkd.models.base.Feature` spec) in the dataset's attributes. It is exact, up to float16
rounding, for runs that train on those slices as they are (``train.augment: none``); a run with
augmentation needs the teacher's features of each augmented view, so it runs the teacher online
(:mod:`hkd.train.teacher_targets`). Cost: ``N * sum(C*h*w) * 2`` bytes of disk and one teacher forward
pass per slice, once per method.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from hkd.data.dataset import load_slices
from hkd.errors import DataError
from hkd.io import atomic_path
from hkd.models import recorder_of
from hkd.models.base import Feature


@torch.no_grad()
def write_cache(teacher: torch.nn.Module, spec: dict, prepared: str | Path, names: list[str], out_path: str | Path,
                device: torch.device | str = "cpu", batch_size: int = 16) -> dict[str, Feature]:
    """Run ``teacher`` (built from model ``spec``) once over the training slices and store ``names``;
    returns their specs."""
    data = load_slices(prepared, "train")
    teacher.eval().to(device)
    features = recorder_of(teacher, spec, "teacher")
    specs = features.describe(int(data.image.shape[-1]), names)
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        for name, spec in specs.items():
            ds = f.create_dataset(name, shape=(len(data), *spec.shape), dtype="f2", chunks=(1, *spec.shape))
            ds.attrs["feature"] = json.dumps(spec.as_dict())
        for i in range(0, len(data), batch_size):
            feats = features(data.image[i:i + batch_size].to(device), names)
            for name in names:
                arr = feats[name].float().cpu().numpy().astype(np.float16)
                f[name][i:i + len(arr)] = arr
        f.attrs["n_slices"] = len(data)
    return specs


def load_cache(path: str | Path, names: tuple[str, ...], n_slices: int) -> tuple[dict[str, torch.Tensor],
                                                                                 dict[str, Feature]]:
    """Load the cached features ``names`` (float16 tensors in memory) and their specs."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs["n_slices"]) != n_slices:
                raise DataError(f"{path}: cache of {int(f.attrs['n_slices'])} slices, but the training set has "
                                f"{n_slices}; rebuild the teacher cache")
            missing = [n for n in names if n not in f]
            if missing:
                raise DataError(f"{path}: teacher features {missing} are not in the cache")
            maps = {n: torch.from_numpy(f[n][()]) for n in names}
            specs = {n: Feature(**json.loads(f[n].attrs["feature"])) for n in names}
            return maps, specs
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable teacher cache ({exc})") from exc
