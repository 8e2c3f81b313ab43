"""TransUNet's on-the-fly augmentation, batched and driven by an explicit random generator.

Per sample: with p=0.5 a random rot90 (k in 0..3) followed by a random flip; otherwise with
p=0.5 a rotation by an angle in [-20, 20) degrees (image bilinear, label nearest); else unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def apply(params: dict[str, torch.Tensor], image: torch.Tensor, *maps: torch.Tensor,
          label: torch.Tensor | None = None):
    """Apply the sampled transforms to ``image`` (B,C,H,W), optional float ``maps`` (B,C',h,w), and ``label`` (B,H,W).

    Maps of other spatial sizes (teacher features) get the same geometric transform.
    Returns (image, maps..., label) in that order (label last when given).
    """
    outs = []
    tensors = [(image, "bilinear"), *[(m, "bilinear") for m in maps]]
    if label is not None:
        tensors.append((label[:, None].float(), "nearest"))
    for t, mode in tensors:
        t = t.clone()
        for i in torch.nonzero(params["rot90"]).flatten().tolist():
            r = torch.rot90(t[i], int(params["k"][i]), dims=(-2, -1))
            t[i] = torch.flip(r, dims=(-1 - int(params["flip_axis"][i]),))
        idx = torch.nonzero(params["rotate"]).flatten()
        if len(idx):
            t[idx] = _rotate(t[idx].float(), params["angle"][idx], mode).to(t.dtype)
        outs.append(t)
    if label is not None:
        outs[-1] = outs[-1][:, 0].round().long()
    return tuple(outs)
