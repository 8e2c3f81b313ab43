"""How the teacher's features reach a distilled run: one interface, two implementations.

* :class:`OnlineTeacher` runs the frozen teacher on exactly the augmented batch the student sees:
  exact for every augmentation, at the cost of one teacher forward pass per step.
* :class:`CachedTeacher` reads the teacher's features of the un-augmented slices from a cache file
  (:mod:`hkd.train.teacher_cache`): exact (up to float16 rounding) and nearly free, but only for runs
  without augmentation, which it enforces. Transforming cached maps does not give the teacher's
  features of a transformed slice: TransUNet's grids are anchored at the top-left and its position
  embeddings are tied to absolute position, so it is not equivariant to flips or rotations.

Both return float32 maps keyed by feature name, and both expose ``specs``, where each map lives.
:func:`teacher_targets` picks a run's source of teacher features; :func:`load_teacher` opens a teacher
checkpoint as an online teacher (for one run or a lock-step cohort).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hkd import devices, distill
from hkd.models import recorder_of
from hkd.models.base import FeatureSpecs
from hkd.models.checkpoint import load_model
from hkd.train.config import TrainConfig
from hkd.train.preflight import check_teacher_spec
from hkd.train.teacher_cache import load_cache


class OnlineTeacher:
    """The frozen teacher, run on each (augmented) batch."""

    def __init__(self, teacher: torch.nn.Module, spec: dict, image_size: int, device: torch.device, autocast):
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        self.features = recorder_of(self.teacher, spec, "teacher")
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


def load_teacher(path: Path, cfg: TrainConfig, image_size: int, device: torch.device,
                 kind: type[OnlineTeacher] = OnlineTeacher) -> OnlineTeacher:
    """The frozen teacher of checkpoint ``path`` as an online teacher of class ``kind``, autocast at the run's
    ``precision``; a checkpoint that does not hold the configured teacher (``cfg.teacher``) is refused."""
    model, spec = load_model(path)
    check_teacher_spec(path, spec, cfg.teacher)
    return kind(model, spec, image_size, device, lambda: devices.autocast(device, cfg.precision))


def teacher_targets(cfg: TrainConfig, teacher_ckpt: Path | None, teacher_cache: Path | None,
                    shared: OnlineTeacher | None, n_train: int, image_size: int, device: torch.device):
    """Where a distilled run's teacher features come from (None for scratch runs): ``shared``, an online
    teacher shared with other runs, as it is; else the cache file ``teacher_cache`` (runs without
    augmentation only); else the checkpoint ``teacher_ckpt``, run online."""
    if cfg.method == "scratch":
        return None
    if shared is not None:
        return shared
    if teacher_cache is not None:
        if cfg.augment != "none":
            raise ValueError(f"{teacher_cache}: a teacher cache holds the features of the un-augmented slices, "
                             f"exact only for runs with augment 'none' (this run: '{cfg.augment}'); "
                             "run the teacher online instead (--teacher)")
        names = distill.get(cfg.method).required_teacher_features({**cfg.method_options})
        return CachedTeacher(teacher_cache, names, n_train, device)
    if teacher_ckpt is None:
        raise ValueError(f"method '{cfg.method}' needs a teacher checkpoint or a teacher cache")
    return load_teacher(teacher_ckpt, cfg, image_size, device)
