"""Teacher and student networks, built from a spec dict by :func:`build_model`.

``{"arch": "transunet", "img_size": 224, "num_classes": 9, ...}`` builds TransUNet (R50-ViT-B/16 by
default; every size is a key, see :class:`~hkd.models.transunet.TransUNet`; an optional
``"pretrained": "R50+ViT-B_16.npz"`` loads Google's ViT weights). ``{"arch": "squeezeunet",
"width": "0.4M" | 3.1, "num_classes": 9, "in_channels": 1}`` builds SqueezeUNet.

Feature interface (both models; names say where a map lives: its stride on the input)
--------------------------------------------------------------------------------------
* ``model(x)`` returns logits ``(B, num_classes, H, W)``; H and W must be divisible by 16.
* ``model.forward_features(x, names=None)`` returns a dict of named ``(B, C, h, w)`` maps in forward
  order; ``names`` restricts it (the forward pass stops once the last requested map is computed):

  ============== ================================= ==================================================
  name           SqueezeUNet (width w)             TransUNet (width 64, hidden 768)
  ============== ================================= ==================================================
  ``enc_s1``     first fire module, 32w            --
  ``enc_s2``     fire module, 64w                  ResNet root, 64
  ``enc_s4``     fire module, 128w                 block 1, 256
  ``enc_s8``     fire module, 256w                 block 2, 512
  ``enc_s16``    --                                block 3, 1024
  ``vit``        --                                ViT output tokens as a map, 768
  ``bottleneck`` bottleneck fire module, 512w      DecoderCup ``conv_more``, 512 (stride 16)
  ``dec_s8``     256w                              256
  ``dec_s4``     128w                              128
  ``dec_s2``     64w                               64
  ``dec_s1``     32w                               16
  ``logits``     num_classes                       num_classes
  ============== ================================= ==================================================

* ``model.describe_features(size)`` gives each map's :class:`~hkd.models.base.Feature`: channels,
  size, stride and grid offset. The grids differ: SqueezeUNet's cells are centred (stride-16 cell ``i``
  at ``16 i + 8``), TransUNet's anchored at the top-left (``16 i + 0.5``); distillation methods move
  maps between them with :func:`hkd.distill.functional.align`.
* ``model.feature_names()`` lists the names in that order.
* ``model.gradcam_layer`` is the dotted name of the module to hook for Grad-CAM (the last decoder
  block): ``model.get_submodule(model.gradcam_layer)``.
"""

from __future__ import annotations

from torch import nn

from hkd.models.squeezeunet import SQUEEZEUNET_PRESETS, FireModule, SqueezeUNet, resolve_width
from hkd.models.transunet import CheckpointError, TransUNet, load_vit_npz

__all__ = ["SQUEEZEUNET_PRESETS", "CheckpointError", "FireModule", "SqueezeUNet", "TransUNet", "build_model",
           "count_parameters", "load_vit_npz", "resolve_width"]

ARCHITECTURES = {"transunet": TransUNet, "squeezeunet": SqueezeUNet}


def build_model(spec: dict) -> nn.Module:
    """Build a model from ``{"arch": ..., **constructor arguments}`` (see the module docstring)."""
    spec = dict(spec)
    arch = str(spec.pop("arch", "")).lower()
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model arch {arch!r}; known: {sorted(ARCHITECTURES)}")
    pretrained = spec.pop("pretrained", None) if arch == "transunet" else None
    for key in ("block_units", "decoder_channels"):
        if key in spec:
            spec[key] = tuple(spec[key])
    try:
        model = ARCHITECTURES[arch](**spec)
    except TypeError as err:
        raise ValueError(f"bad {arch} spec {spec}: {err}") from err
    if pretrained:
        load_vit_npz(model, pretrained)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
