"""How the teacher's features reach a distilled run: one interface, two implementations.

* :class:`OnlineTeacher` runs the frozen teacher on exactly the augmented batch the student sees:
  exact for every augmentation, at the cost of one teacher forward pass per step.
* :class:`CachedTeacher` reads the teacher's features of the un-augmented slices from a cache file
  (:mod:`hkd.train.teacher_cache`): exact (up to float16 rounding) and nearly free, but only for runs
  without augmentation, which it enforces. Transforming cached maps does not give the teacher's
  features of a transformed slice: TransUNet's grids are anchored at the top-left and its position
  embeddings are tied to absolute position, so it is not equivariant to flips or rotations.

Both return float32 maps keyed by feature name, and both expose ``specs``, where each map lives.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hkd.models import recorder
from hkd.models.base import FeatureSpecs
from hkd.train.teacher_cache import load_cache


class OnlineTeacher:
    """The frozen teacher, run on each (augmented) batch."""

    def __init__(self, teacher: torch.nn.Module, spec: dict, image_size: int, device: torch.device, autocast):
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        self.features = recorder(self.teacher, spec, "teacher")
        self.specs: FeatureSpecs = self.features.describe(image_size)
        self.autocast = autocast

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        with self.autocast():
            feats = self.features(x, names)
        return {k: v.float() for k, v in feats.items()}


class CachedTeacher:
    """The teacher's features of the un-augmented training slices, from a cache file."""

    def __init__(self, path: str | Path, names: tuple[str, ...], n_slices: int, device: torch.device):
        self.maps, self.specs = load_cache(path, names, n_slices)
        self.device = device

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return {k: self.maps[k][idx].to(self.device).float() for k in names}
