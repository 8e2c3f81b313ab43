"""The feature interface shared by teacher and student (see :mod:`hkd.models`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class Feature:
    """Where a named map lives: its channels and size, and its grid on the input image.

    Cell ``i`` of the map is centred at input pixel coordinate ``stride * i + offset`` (continuous
    coordinates: input pixel ``k`` spans ``[k, k + 1)``), on both axes.
    """

    channels: int
    height: int
    width: int
    stride: float
    offset: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    def as_dict(self) -> dict:
        return asdict(self)


FeatureSpecs = dict[str, Feature]  # feature name -> where it lives


class FeatureModel(nn.Module):
    """A segmentation network whose ``_features`` yields ``(name, tensor)`` pairs in forward order.

    Subclasses list the names in ``FEATURE_NAMES`` (the last is ``logits``), say how their grids are
    anchored in ``GRID_OFFSET`` (``"centred"``: cell ``i`` of a stride-``s`` map is centred at
    ``s * (i + 0.5)``; ``"top-left"``: at ``s * i + 0.5``), name the module for Grad-CAM in
    ``gradcam_layer`` and split themselves into blocks in ``_blocks`` (see :meth:`blocks`).
    """

    FEATURE_NAMES: ClassVar[tuple[str, ...]] = ()
    GRID_OFFSET: ClassVar[str] = "centred"
    gradcam_layer: str = ""

    def _features(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        raise NotImplementedError

    def _blocks(self) -> dict[str, list[nn.Module]]:
        raise NotImplementedError

    def blocks(self) -> dict[str, list[nn.Parameter]]:
        """The network's blocks in forward order (encoder stages ``enc1``.., ``bottleneck``, decoder stages
        ``dec1``.., ``head``; a model may have others), each with its parameters.

        Every parameter belongs to exactly one block; a subclass whose blocks miss or repeat one is an
        error (raised here), so per-block quantities always add up to the whole model's.
        """
        out, seen = {}, {}
        for name, modules in self._blocks().items():
            out[name] = []
            for module in modules:
                for p in module.parameters():
                    if id(p) in seen:
                        raise ValueError(f"{type(self).__name__}: a parameter is in blocks "
                                         f"'{seen[id(p)]}' and '{name}'")
                    seen[id(p)] = name
                    out[name].append(p)
        missed = [n for n, p in self.named_parameters() if id(p) not in seen]
        if missed:
            raise ValueError(f"{type(self).__name__}: parameters in no block: {missed}")
        return out

    @classmethod
    def feature_names(cls) -> tuple[str, ...]:
        return cls.FEATURE_NAMES

    def describe_features(self, size: int, names=None) -> FeatureSpecs:
        """Channels, size and grid of each named map for a ``size`` x ``size`` input."""
        param = next(self.parameters())
        was_training = self.training
        try:
            with torch.no_grad():
                x = torch.zeros(1, getattr(self, "in_channels", 1), size, size, device=param.device)
                feats = self.eval().forward_features(x, names=list(names) if names is not None else None)
        finally:
            self.train(was_training)
        specs = {}
        for name, value in feats.items():
            c, h, w = (int(v) for v in value.shape[1:])
            stride = size / h
            offset = 0.5 if self.GRID_OFFSET == "top-left" else stride / 2
            specs[name] = Feature(c, h, w, stride, offset)
        return specs

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
