"""Feature math shared by the distillation methods.

All maps are ``(B, C, H, W)`` tensors. :func:`align` is the one way a map moves from one model's grid
to another's; divergences and attention maps are computed in float32 whatever the input precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from hkd.models.base import Feature
from hkd.data.tasks import IGNORE


def _sample_positions(n_dst: int, dst_stride: float, dst_offset: float, src_stride: float, src_offset: float,
                      shift: float, n_src: int, device) -> torch.Tensor:
    """Normalised source coordinates (``grid_sample``, ``align_corners=True``) of the destination cells."""
    centres = dst_stride * torch.arange(n_dst, dtype=torch.float32, device=device) + dst_offset
    index = (centres - src_offset) / src_stride - shift  # fractional source index of each centre
    return index * (2.0 / (n_src - 1)) - 1.0 if n_src > 1 else torch.zeros_like(index)


def _box_mean(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Means of every ``k`` consecutive cells along ``dim`` (a "valid" box filter, stride 1).

    Computed as differences of a float32 running sum: the same numbers as ``avg_pool2d(stride=1)``
    to rounding, at a fraction of its cost on the CPU, where pooling's backward pass dominated a
    distilled step (6x slower at a 16-cell window).
    """
    n = x.shape[dim]
    total = F.pad(torch.cumsum(x.float(), dim=dim).movedim(dim, -1), (1, 0)).movedim(-1, dim)
    return ((total.narrow(dim, k, n - k + 1) - total.narrow(dim, 0, n - k + 1)) / k).to(x.dtype)


def align(x: torch.Tensor, src: Feature, dst: Feature) -> torch.Tensor:
    """Resample ``x``, a map on ``src``'s grid, onto ``dst``'s grid and size.

    Cell centres are matched in input-pixel coordinates, so maps of models whose grids are anchored
    differently (TransUNet: top-left, SqueezeUNet: centred) compare the same image positions. Shrinking
    by a factor ``k`` first averages ``k x k`` source cells, so every source position contributes (plain
    bilinear shrinking would read only 4 cells per output cell and skip the rest); enlarging and
    sub-cell shifts are bilinear. Positions beyond the source border take the border value. PyTorch's
    ``interpolate`` has no grid offset, hence the explicit sampling grid.
    """
    if (src.height, src.width, src.stride, src.offset) == (dst.height, dst.width, dst.stride, dst.offset):
        return x
    if tuple(x.shape[-2:]) != (src.height, src.width):
        raise ValueError(f"map of size {tuple(x.shape[-2:])} does not match its grid {src}")
    k = max(1, min(int(round(dst.stride / src.stride)), src.height, src.width))
    shift = 0.0
    if k > 1:  # pooled cell i averages source cells i..i+k-1 and is centred at source index i + (k-1)/2
        x = _box_mean(_box_mean(x, k, -2), k, -1)  # separable box filter
        shift = (k - 1) / 2
    gy = _sample_positions(dst.height, dst.stride, dst.offset, src.stride, src.offset, shift, x.shape[-2], x.device)
    gx = _sample_positions(dst.width, dst.stride, dst.offset, src.stride, src.offset, shift, x.shape[-1], x.device)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (H, W, 2) as (x, y)
    grid = grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def coarsest(features: Iterable[Feature]) -> Feature:
    """The grid with the fewest cells (largest stride) among ``features``."""
    return min(features, key=lambda f: (f.height * f.width, -f.stride))


def concat_on(maps: Sequence[torch.Tensor], grids: Sequence[Feature], dst: Feature) -> torch.Tensor:
    """Align every map onto ``dst``'s grid and concatenate them on channels."""
    return torch.cat([align(m, g, dst) for m, g in zip(maps, grids)], dim=1)


def kd_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, dim: int = 1) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher/T) || softmax(student/T))`` with the softmax over ``dim``.

    The divergence is summed over ``dim`` and averaged over every other position (batch and
    pixels). For segmentation logits ``dim=1`` is the class axis: one distribution per pixel.
    """
    t = float(temperature)
    log_p = F.log_softmax(student.float() / t, dim=dim)
    log_q = F.log_softmax(teacher.float() / t, dim=dim)
    kl = (log_q.exp() * (log_q - log_p)).sum(dim=dim)
    return kl.mean() * t * t


def at_map(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention map: L2-normalised ``flatten(mean_c |x|^p)``, shape ``(B, H*W)``."""
    a = x.float().abs().pow(p).mean(dim=1).flatten(1)
    return F.normalize(a, p=2.0, dim=1)


def parse_pair(spec: str) -> tuple[str, str]:
    """``"student:teacher"`` -> ``(student, teacher)``; a single name pairs a feature with itself."""
    parts = [s.strip() for s in str(spec).split(":")]
    if len(parts) == 1 and parts[0]:
        return parts[0], parts[0]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise ValueError(f"bad layer pair {spec!r}; expected 'name' or 'student_name:teacher_name'")


def as_name_list(value) -> list[str]:
    """An option given as a list of names or as one comma-separated string -> list of names."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label map ``(B, H, W)`` -> float one-hot ``(B, C, H, W)``; pixels labelled
    :data:`~hkd.data.tasks.IGNORE` (outside a rotated slice) get all zeros: no class."""
    labels = labels.long()
    valid = labels != IGNORE
    return F.one_hot(labels.where(valid, 0), num_classes).movedim(-1, 1).float() * valid[:, None]
