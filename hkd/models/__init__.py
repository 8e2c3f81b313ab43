"""Teacher and student networks, built from a model spec, and where their features are read.

A model spec is a dict: ``arch``, the network's constructor arguments and hkd's own keys
(:data:`SPEC_KEYS`). hkd's networks take their arguments beside ``arch``; an outside network takes them
under ``args``, so that its argument names never clash with hkd's keys (BasicUNet has a ``features``
argument). Architectures:

* ``transunet``: TransUNet (R50-ViT-B/16 by default; every size is a key, see
  :class:`~hkd.models.transunet.TransUNet`; an optional ``"pretrained": "R50+ViT-B_16.npz"`` loads Google's
  ViT weights).
* ``squeezeunet``: SqueezeUNet, ``{"width": "0.4M" | 3.1, "init": "he"}``.
* ``monai``: a network of ``monai.networks.nets`` by class ``name`` (``pip install 'hkd[monai]'``), e.g.
  ``{"arch": "monai", "name": "BasicUNet", "args": {"spatial_dims": 2, "in_channels": 1, "out_channels": 9}}``.
* ``module``: the user's own ``nn.Module``, ``{"arch": "module", "name": "package.module:Class", "args": {...}}``.

hkd's keys, none of them passed to the constructor:

* ``features``: feature name -> module path; the module's output is recorded by a forward hook
  (:mod:`hkd.models.recorder`). TransUNet and SqueezeUNet come with theirs (the tables in their modules:
  ``enc_s1``..``enc_s16``, ``vit``, ``bottleneck``, ``dec_s8``..``dec_s1``; a name says the map's stride on
  the input), which a spec may extend or override. ``logits`` is the model's output unless named.
* ``grid``: ``centred`` or ``top-left``, how the maps' cells sit on the input (:data:`~hkd.models.recorder.GRIDS`).
* ``gradcam_layer``: the module Grad-CAM hooks (default: the architecture's, else the module of the last
  named feature before ``logits``).
* ``blocks``: block name -> module paths, the blocks whose gradients each run logs (default: the
  architecture's, else one block per top-level sub-module).
* ``pretrained``: TransUNet only, a ViT ``.npz`` to start from.

The data's class count reaches TransUNet and SqueezeUNet as ``num_classes`` (TransUNet also gets the slice
size); a ``monai`` or ``module`` network states its own (``out_channels``), which runs check against the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from hkd.models import external, squeezeunet, transunet
from hkd.models.base import Feature, FeatureSpecs, partition, top_level_blocks
from hkd.models.recorder import OUTPUT, FeatureRecorder
from hkd.models.squeezeunet import SQUEEZEUNET_PRESETS, FireModule, SqueezeUNet, resolve_width
from hkd.models.transunet import CheckpointError, TransUNet, load_vit_npz

__all__ = ["ARCHITECTURES", "SPEC_KEYS", "SQUEEZEUNET_PRESETS", "CheckpointError", "Feature", "FeatureRecorder",
           "FeatureSpecs", "FireModule", "SqueezeUNet", "TransUNet", "build_model", "count_parameters",
           "gradcam_layer", "label", "load_vit_npz", "model_blocks", "recorder_of", "resolve_width"]

SPEC_KEYS = ("arch", "name", "args", "features", "grid", "gradcam_layer", "blocks", "pretrained")


@dataclass(frozen=True)
class Architecture:
    """How to build a network from its constructor arguments, and what hkd knows of it by default."""

    build: Callable[[dict, dict], nn.Module] | None  # (constructor arguments, whole spec) -> network
    features: dict[str, str] = field(default_factory=dict)
    grid: str = "centred"
    gradcam_layer: str | None = None
    blocks: dict[str, list[str]] | None = None
    takes_classes: bool = False  # the data's class count is passed as ``num_classes``
    outside: bool = False  # constructor arguments under ``args``
    cls: Callable[[dict], type] | None = None  # an outside network: spec -> its class (imported)


def _transunet(args: dict, spec: dict) -> nn.Module:
    for key in ("block_units", "decoder_channels"):
        if key in args:
            args[key] = tuple(args[key])
    model = TransUNet(**args)
    if spec.get("pretrained"):
        load_vit_npz(model, spec["pretrained"])
    return model


ARCHITECTURES: dict[str, Architecture] = {
    "transunet": Architecture(_transunet, transunet.FEATURES, transunet.GRID, transunet.GRADCAM_LAYER,
                              transunet.BLOCKS, takes_classes=True),
    "squeezeunet": Architecture(lambda args, spec: SqueezeUNet(**args), squeezeunet.FEATURES, squeezeunet.GRID,
                                squeezeunet.GRADCAM_LAYER, squeezeunet.BLOCKS, takes_classes=True),
    "monai": Architecture(None, outside=True, cls=lambda spec: external.monai_class(spec.get("name"))),
    "module": Architecture(None, outside=True, cls=lambda spec: external.module_class(spec.get("name"))),
}


def _arch(spec: dict) -> Architecture:
    arch = str(spec.get("arch", "")).lower()
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model arch {arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def label(spec: dict) -> str:
    """The model in words: ``transunet``, ``monai SwinUNETR``, ``module pkg.nets:Net``."""
    arch = str(spec.get("arch", ""))
    return f"{arch} {spec['name']}" if spec.get("name") else arch


def build_model(spec: dict) -> nn.Module:
    """Build the network of a model spec (see the module docstring); the network is not changed by hkd."""
    arch = _arch(spec)
    args = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
    if arch.outside:
        if args:
            raise ValueError(f"{label(spec)}: unknown key(s) {sorted(args)}; the network's constructor arguments go "
                             "under 'args'")
        args = dict(spec.get("args") or {})
    elif "args" in spec:
        raise ValueError(f"{label(spec)}: takes its arguments beside 'arch', not under 'args'")
    if not arch.outside:
        try:
            return arch.build(args, spec)
        except TypeError as err:
            raise ValueError(f"bad {label(spec)} spec {args}: {err}") from err
    cls = arch.cls(spec)
    problems = external.argument_problems(cls, args)
    if problems:
        raise ValueError(f"{label(spec)}: {'; '.join(problems)}")
    try:
        return cls(**args)
    except Exception as exc:  # the user's code: its error, in one line
        raise ValueError(f"{label(spec)}: building it with args {args} raised {external.one_line(exc)}") from None


def feature_paths(spec: dict) -> dict[str, str]:
    """Feature name -> module path: the architecture's table, extended or overridden by the spec's."""
    features = spec.get("features") or {}
    if not isinstance(features, dict) or not all(isinstance(v, str) and v for v in features.values()):
        raise ValueError(f"{label(spec)}: 'features' must map feature names to module paths, got {features!r}")
    return {**_arch(spec).features, **features}


def recorder_of(model: nn.Module, spec: dict, role: str = "model") -> FeatureRecorder:
    """The recorder of ``model``'s features as its spec names them; ``role`` (teacher, student) names it in errors."""
    args = (spec.get("args") or {}) if _arch(spec).outside else spec
    return FeatureRecorder(model, feature_paths(spec), spec.get("grid") or _arch(spec).grid,
                           f"{role} ({label(spec)})", int(args.get("in_channels", 1)))


def describe_spec(spec: dict, size: int, role: str = "model") -> FeatureSpecs:
    """The feature table of a model spec for a ``size`` x ``size`` input (:meth:`FeatureRecorder.describe`),
    measured without weights or arithmetic: the network is built and probed on the meta device, where
    tensors carry shapes only (a paper-size TransUNet in a tenth of the time). A network that needs values
    in its forward pass (``.item()``, as MONAI's SwinUNETR) or fails there is built and probed on the CPU,
    so its errors are the CPU's own."""
    try:
        with torch.device("meta"):
            model = build_model(spec)
        return recorder_of(model, spec, role).describe(size)
    except Exception:  # noqa: BLE001 - any failure is judged by the CPU probe below
        return recorder_of(build_model(spec), spec, role).describe(size)


def gradcam_layer(spec: dict) -> str:
    """The module Grad-CAM hooks: the spec's, the architecture's, else the last named feature's before logits."""
    if spec.get("gradcam_layer"):
        return spec["gradcam_layer"]
    if _arch(spec).gradcam_layer:
        return _arch(spec).gradcam_layer
    paths = [p for n, p in feature_paths(spec).items() if n != OUTPUT]
    if not paths:
        raise ValueError(f"{label(spec)}: no 'gradcam_layer' and no named feature to take it from")
    return paths[-1]


def model_blocks(model: nn.Module, spec: dict) -> dict:
    """The network's blocks, each with its parameters: the spec's table, the architecture's, else one block
    per top-level sub-module (:func:`hkd.models.base.partition`)."""
    table = spec.get("blocks") or _arch(spec).blocks or top_level_blocks(model)
    return partition(model, table)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
