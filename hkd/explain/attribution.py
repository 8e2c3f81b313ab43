"""Per-class attribution maps of a segmentation model, computed with Captum.

Captum explains one scalar per sample. For a segmentation model and a target class ``c`` that
scalar is the sum of the class-``c`` logits over the pixels the model itself labels ``c`` (all
pixels when it labels none): "why does the model segment this organ where it does".
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam, Saliency
from scipy import ndimage
from torch import nn


class ClassScore(nn.Module):
    """Wraps a segmentation model as ``x -> sum of class logits over a fixed pixel mask`` (shape (B,))."""

    def __init__(self, model: nn.Module, target_class: int, mask: torch.Tensor):
        super().__init__()
        self.model = model
        self.target_class = int(target_class)
        self.register_buffer("mask", mask.to(torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)[:, self.target_class]
        return (logits * self.mask).sum(dim=(-2, -1))


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Run in eval mode (no dropout, frozen norm statistics) and restore the previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _prepare(model: nn.Module, image: torch.Tensor, target_class: int) -> tuple[ClassScore, torch.Tensor]:
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image (1, C, H, W), got {tuple(image.shape)}")
    device = next(model.parameters()).device
    x = image.detach().to(device=device, dtype=torch.float32)
    with torch.no_grad():
        logits = model(x)
    if not 0 <= target_class < logits.shape[1]:
        raise ValueError(f"target class {target_class} out of range for {logits.shape[1]} classes")
    mask = logits.argmax(1) == target_class
    if not mask.any():
        mask = torch.ones_like(mask)
    return ClassScore(model, target_class, mask), x


def saliency(model: nn.Module, image: torch.Tensor, target_class: int) -> np.ndarray:
    """Absolute input gradient of the class score, (H, W) (max over input channels)."""
    with _eval_mode(model):
        score, x = _prepare(model, image, target_class)
        grads = Saliency(score).attribute(x.requires_grad_(), abs=True)
    return grads[0].amax(dim=0).detach().cpu().numpy().astype(np.float32)


def gradcam(model: nn.Module, image: torch.Tensor, target_class: int, layer: str) -> np.ndarray:
    """Grad-CAM of the class score at module ``layer`` (a dotted path; :func:`hkd.models.gradcam_layer`
    gives a model's), (H, W) in [0, 1].

    ReLU'd, bilinearly upsampled to the input size and divided by its maximum; a map with no
    positive evidence stays all zero.
    """
    module = model.get_submodule(layer)
    with _eval_mode(model):
        score, x = _prepare(model, image, target_class)
        cam = LayerGradCam(score, module).attribute(x, relu_attributions=True)
        cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    cam = cam[0, 0].detach().cpu().clamp(min=0).numpy().astype(np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 and np.isfinite(peak) else np.zeros_like(cam)


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2


def outside_mass(attribution: np.ndarray, organ_mask: np.ndarray, dilation: int) -> float:
    """Share of the attribution mass (absolute values) outside the organ mask grown by ``dilation`` pixels.

    0 means everything the model looks at lies on (or next to) the organ; higher values mean more
    context from elsewhere. NaN when the map has no mass.
    """
    attribution = np.abs(np.asarray(attribution, dtype=np.float64))
    organ_mask = np.asarray(organ_mask, dtype=bool)
    if attribution.shape != organ_mask.shape:
        raise ValueError(f"attribution {attribution.shape} and mask {organ_mask.shape} differ in shape")
    if dilation < 0:
        raise ValueError(f"dilation must be >= 0, got {dilation}")
    total = attribution.sum()
    if not total > 0:
        return float("nan")
    region = ndimage.binary_dilation(organ_mask, structure=_disk(dilation))
    return float(attribution[~region].sum() / total)
