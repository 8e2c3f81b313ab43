"""SqueezeUNet: a U-Net built from SqueezeNet fire modules (no batch norm).

Layout at width 1 (channels; every encoder stage is followed by a 2x2 max pool)::

    fire 1->32 (sq 16) | fire ->64 (sq 16) | fire ->128 (sq 32) | fire ->256 (sq 48)   encoder / skips
    fire 256->512 (sq 64) at 1/16                                                       bottleneck
    up x2 + skip -> fire 256 (sq 48) | 128 (sq 32) | 64 (sq 16) | 32 (sq 16)            decoder
    1x1 conv -> classes                                                                 head

Initialisation (``init``): ``"he"`` (the default) draws every convolution before the head from He's
normal distribution for ReLU (variance 2 / fan-in, zero bias); ``"torch"`` keeps PyTorch's default
(variance 1 / (3 fan-in)), which without batch norm shrinks the signal at every convolution: on a
uniform [0, 1) input the bottleneck's standard deviation is 0.033 with ``"torch"`` against 0.44 with
``"he"`` (width 1). With ``"torch"``, students at the default's training budget sat for epochs on an
all-background or liver-only plateau (scratch 0.4M validation Dice 0.10 after 8 epochs; 0.38 after 6
with ``"he"``, same seed and recipe). The head keeps PyTorch's small default.

With 1 input channel and 9 classes this has 423,961 trainable parameters. A width multiplier scales
every squeeze and expand width, rounding down: expand widths to even numbers (two equal expand
branches), squeeze widths to integers, both to at least one channel per branch, so any positive
multiplier builds. Rounding down reproduces the reported sizes of the wider variants (x3.1 = 4.04M,
x6.2 = 16.19M parameters); rounding to nearest would give 4.06M and 16.24M.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# Width multipliers of the named sizes (parameters at 1 input channel, 9 classes).
SQUEEZEUNET_PRESETS: dict[str, float] = {
    "0.4M": 1.0,  # 423,961
    "4M": 3.1,  # 4,038,756
    "6.7M": 4.0,  # 6,758,473
    "16M": 6.2,  # 16,186,222
}

INITS = ("he", "torch")  # see the module docstring
_ENCODER = ((32, 16), (64, 16), (128, 32), (256, 48))  # (expand, squeeze) per stage
_BOTTLENECK = (512, 64)
_DECODER = ((256, 48), (128, 32), (64, 16), (32, 16))


class FireModule(nn.Module):
    """1x1 squeeze + ReLU, then 1x1 and 3x3 expand branches of ``expand // 2`` channels, ReLU, concat."""

    def __init__(self, in_channels: int, squeeze: int, expand: int):
        super().__init__()
        if expand % 2:
            raise ValueError(f"expand channels must be even, got {expand}")
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand // 2, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand // 2, 3, padding=1)
        self.out_channels = expand

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x), inplace=True)
        return F.relu(torch.cat([self.expand1x1(s), self.expand3x3(s)], dim=1), inplace=True)


def resolve_width(width: float | str) -> float:
    """Width multiplier from a preset name (``"0.4M"``, ``"4M"``...) or a number."""
    if isinstance(width, str):
        if width in SQUEEZEUNET_PRESETS:
            return SQUEEZEUNET_PRESETS[width]
        try:
            width = float(width)
        except ValueError:
            raise ValueError(f"unknown SqueezeUNet width {width!r}; presets: {sorted(SQUEEZEUNET_PRESETS)}") from None
    width = float(width)
    if not width > 0:
        raise ValueError(f"SqueezeUNet width multiplier must be positive, got {width}")
    return width


def _expand(c: int, w: float) -> int:
    return 2 * max(1, int(c * w / 2 + 1e-9))


def _squeeze(c: int, w: float) -> int:
    return max(1, int(c * w + 1e-9))


# Where its maps are read (name: stride on the input; see hkd.models.recorder). Every map is centred: the
# unpadded 2x2 max pools make cell i of a stride-s map cover input pixels [s*i, s*i + s), centred at
# s*(i + 0.5); decoder maps follow the grid of their skip.
FEATURES = {"enc_s1": "encoder.0", "enc_s2": "encoder.1", "enc_s4": "encoder.2", "enc_s8": "encoder.3",
            "bottleneck": "bottleneck", "dec_s8": "decoder.0", "dec_s4": "decoder.1", "dec_s2": "decoder.2",
            "dec_s1": "decoder.3"}
GRID = "centred"
GRADCAM_LAYER = "decoder.3"  # last decoder fire module (full resolution)
# One block per fire module (encoder stages, bottleneck, decoder stages) and the head.
BLOCKS = {**{f"enc{i + 1}": [f"encoder.{i}"] for i in range(4)}, "bottleneck": ["bottleneck"],
          **{f"dec{i + 1}": [f"decoder.{i}"] for i in range(4)}, "head": ["head"]}


class SqueezeUNet(nn.Module):
    """SqueezeUNet student; input height and width must be divisible by 16."""

    def __init__(self, num_classes: int = 9, in_channels: int = 1, width: float | str = 1.0, init: str = "he"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown SqueezeUNet init {init!r}; known: {', '.join(INITS)}")
        self.width = resolve_width(width)
        self.num_classes = num_classes
        self.in_channels = in_channels
        w = self.width
        self.encoder = nn.ModuleList()
        c = in_channels
        skips = []
        for e, s in _ENCODER:
            self.encoder.append(FireModule(c, _squeeze(s, w), _expand(e, w)))
            c = _expand(e, w)
            skips.append(c)
        self.bottleneck = FireModule(c, _squeeze(_BOTTLENECK[1], w), _expand(_BOTTLENECK[0], w))
        c = self.bottleneck.out_channels
        self.decoder = nn.ModuleList()
        for (e, s), skip in zip(_DECODER, reversed(skips)):
            self.decoder.append(FireModule(c + skip, _squeeze(s, w), _expand(e, w)))
            c = _expand(e, w)
        self.head = nn.Conv2d(c, num_classes, 1)
        if init == "he":
            for module in self.modules():
                if isinstance(module, nn.Conv2d) and module is not self.head:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % 16 or x.shape[-1] % 16:
            raise ValueError(f"SqueezeUNet input height and width must be divisible by 16, got {tuple(x.shape[-2:])}")
        skips = []
        for fire in self.encoder:
            x = fire(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for i, fire in enumerate(self.decoder):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            x = fire(torch.cat([x, skips[-1 - i]], dim=1))
        return self.head(x)
