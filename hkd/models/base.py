"""The feature interface shared by teacher and student (see :mod:`hkd.models`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import nn


class FeatureModel(nn.Module):
    """A segmentation network whose ``_features`` yields ``(name, tensor)`` pairs in forward order.

    Subclasses list the names in ``FEATURE_NAMES`` (the last is ``logits``) and name the module
    for Grad-CAM in ``gradcam_layer``.
    """

    FEATURE_NAMES: ClassVar[tuple[str, ...]] = ()
    gradcam_layer: str = ""

    def _features(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        raise NotImplementedError

    @classmethod
    def feature_names(cls) -> tuple[str, ...]:
        return cls.FEATURE_NAMES

    def forward_features(self, x: torch.Tensor, names=None) -> dict[str, torch.Tensor]:
        """Named intermediate maps in forward order; with ``names``, only those (stopping early)."""
        if names is None:
            return dict(self._features(x))
        wanted = set(names)
        unknown = wanted - set(self.FEATURE_NAMES)
        if unknown:
            raise KeyError(f"unknown feature name(s) {sorted(unknown)}; available: {list(self.FEATURE_NAMES)}")
        out = {}
        for name, value in self._features(x):
            if name in wanted:
                out[name] = value
                if len(out) == len(wanted):
                    break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, out in self._features(x):
            pass
        return out
