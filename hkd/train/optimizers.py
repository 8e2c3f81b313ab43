"""Optimisers and learning-rate schedules by name: the training config's ``optimizer`` and ``schedule``.

Each table maps a name to its builder; adding an entry makes the name valid for
:class:`~hkd.train.config.TrainConfig` (whose values are checked against the tables). A name not in a
table is refused with an error naming the config key and the known names.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from hkd.train.config import TrainConfig


def _sgd(params, cfg: TrainConfig, fused: dict) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **fused)


def _adam(params, cfg: TrainConfig, fused: dict) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def _adamw(params, cfg: TrainConfig, fused: dict) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def _poly(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """``lr (1 - t)^poly_power`` over the run's steps."""
    return cfg.lr * (1.0 - step / total_steps) ** cfg.poly_power


def _cosine(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Half a cosine from ``lr`` down to ``min_lr`` over the run's steps."""
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * step / total_steps))


#: optimizer name -> builder(parameters, config, fused options)
OPTIMIZERS = {"sgd": _sgd, "adamw": _adamw, "adam": _adam}
#: schedule name -> learning rate at (config, step, total steps)
SCHEDULES = {"poly": _poly, "cosine": _cosine}


def _entry(table: dict, key: str, name: str):
    try:
        return table[name]
    except (KeyError, TypeError):
        raise ValueError(f"training config key {key}: unknown {key} {name!r}; known: "
                         f"{', '.join(sorted(table))}") from None


def build_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over ``params``, with the fused update where ``cfg.fused`` asks for it
    and the device has one (CPU and CUDA)."""
    builder = _entry(OPTIMIZERS, "optimizer", cfg.optimizer)
    fused = {"fused": True} if cfg.fused and device.type in ("cpu", "cuda") else {}
    return builder(params, cfg, fused)


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (from 0) of ``total_steps`` under the schedule ``cfg.schedule``."""
    return _entry(SCHEDULES, "schedule", cfg.schedule)(cfg, step, total_steps)
