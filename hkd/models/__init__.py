"""Teacher and student networks, built from a spec dict by :func:`build_model`.

``{"arch": "transunet", "img_size": 224, "num_classes": 9, ...}`` builds TransUNet (R50-ViT-B/16 by
default; every size is a key, see :class:`~hkd.models.transunet.TransUNet`; an optional
``"pretrained": "R50+ViT-B_16.npz"`` loads Google's ViT weights). ``{"arch": "squeezeunet",
"width": "0.4M" | 3.1, "num_classes": 9, "in_channels": 1}`` builds SqueezeUNet.

Feature interface (both models, same names)
-------------------------------------------
* ``model(x)`` returns logits ``(B, num_classes, H, W)``; H and W must be divisible by 16.
* ``model.forward_features(x, names=None)`` returns a dict of named ``(B, C, h, w)`` maps in forward
  order; ``names`` restricts it (the forward pass stops once the last requested map is computed):

  ========== ================================= ======================================================
  name       SqueezeUNet (width w)             TransUNet (width 64, hidden 768)
  ========== ================================= ======================================================
  ``enc1``   first fire module, 32w, 1/1       ResNet root, 64, 1/2
  ``enc2``   64w, 1/2                          block 1, 256, 1/4
  ``enc3``   128w, 1/4                         block 2, 512, 1/8
  ``enc4``   256w, 1/8                         block 3, 1024, 1/16
  ``vit``    --                                ViT output tokens as a map, 768, 1/16
  ``latent`` bottleneck, 512w, 1/16            DecoderCup ``conv_more``, 512, 1/16
  ``dec4``   256w, 1/8                         256, 1/8
  ``dec3``   128w, 1/4                         128, 1/4
  ``dec2``   64w, 1/2                          64, 1/2
  ``dec1``   32w, 1/1                          16, 1/1
  ``logits`` num_classes, 1/1                  num_classes, 1/1
  ========== ================================= ======================================================

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
