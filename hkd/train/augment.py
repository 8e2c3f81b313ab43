"""TransUNet's on-the-fly augmentation, batched and driven by an explicit random generator.

Per sample: with p=0.5 a random rot90 (k in 0..3) followed by a random flip; otherwise with
p=0.5 a rotation by an angle in [-20, 20) degrees (image bilinear, label nearest); else unchanged.

A rotation leaves the corners of the square without source pixels. The image there is ``fill``, the
lower end of the intensity window (0 for images in [0, 1], as in TransUNet's ``scipy.ndimage.rotate``);
the label there is :data:`~hkd.data.tasks.IGNORE`, so no class is invented for pixels nobody annotated and the
segmentation loss skips them. A distilled run's teacher sees the same augmented image, so its targets
there are what it really predicts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hkd.data.tasks import IGNORE


def sample_params(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw augmentation parameters for ``n`` samples."""
    u = torch.rand(n, 2, generator=gen)
    return {
        "rot90": u[:, 0] < 0.5,
        "rotate": (u[:, 0] >= 0.5) & (u[:, 1] < 0.5),
        "k": torch.randint(0, 4, (n,), generator=gen),
        "flip_axis": torch.randint(0, 2, (n,), generator=gen),
        "angle": torch.rand(n, generator=gen) * 40.0 - 20.0,
    }


def _rotate(x: torch.Tensor, angles_deg: torch.Tensor, mode: str) -> torch.Tensor:
    theta = torch.zeros(x.shape[0], 2, 3, dtype=torch.float32, device=x.device)
    rad = angles_deg.to(x.device, torch.float32) * math.pi / 180.0
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(rad), -torch.sin(rad)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(rad), torch.cos(rad)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def branches(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per sample, which branch was drawn: 0 unchanged, 1 rot90 + flip, 2 small rotation."""
    return params["rot90"].long() + 2 * params["rotate"].long()


def apply(params: dict[str, torch.Tensor], image: torch.Tensor, label: torch.Tensor | None = None,
          fill: float = 0.0):
    """Apply the sampled transforms to ``image`` (B,C,H,W) and the optional ``label`` (B,H,W); rotated
    images are ``fill`` outside the rotated support.

    Returns ``image`` or ``(image, label)``; rotated labels are :data:`~hkd.data.tasks.IGNORE` outside the rotated support.
    """
    image = image.clone()
    label = label.clone() if label is not None else None
    for i in torch.nonzero(params["rot90"]).flatten().tolist():
        k, axis = int(params["k"][i]), -1 - int(params["flip_axis"][i])
        image[i] = torch.flip(torch.rot90(image[i], k, dims=(-2, -1)), dims=(axis,))
        if label is not None:
            label[i] = torch.flip(torch.rot90(label[i], k, dims=(-2, -1)), dims=(axis,))
    idx = torch.nonzero(params["rotate"]).flatten()
    if len(idx):
        angles = params["angle"][idx]
        if fill:
            image[idx] = (_rotate(image[idx].float() - fill, angles, "bilinear") + fill).to(image.dtype)
        else:
            image[idx] = _rotate(image[idx].float(), angles, "bilinear").to(image.dtype)
        if label is not None:
            rotated = _rotate(label[idx, None].float(), angles, "nearest")[:, 0]
            support = _rotate(torch.ones_like(label[idx, None], dtype=torch.float32), angles, "nearest")[:, 0] > 0.5
            label[idx] = torch.where(support, rotated.round().to(label.dtype),
                                     torch.full_like(label[idx], IGNORE))
    return image if label is None else (image, label)
