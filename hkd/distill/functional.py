"""Feature math shared by the distillation methods.

All maps are ``(B, C, H, W)`` tensors. Resizing is bilinear with ``align_corners=False``; divergences
and attention maps are computed in float32 whatever the input precision.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize ``x`` to spatial ``size`` (returned unchanged when it already has it)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


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


def smallest_size(maps: Iterable[torch.Tensor]) -> tuple[int, int]:
    """Spatial size ``(H, W)`` of the map with the fewest pixels."""
    return min((tuple(m.shape[-2:]) for m in maps), key=lambda hw: (hw[0] * hw[1], hw))


def concat_at_smallest(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Resize all maps to the smallest spatial size among them and concatenate on channels."""
    size = smallest_size(maps)
    return torch.cat([resize(m, size) for m in maps], dim=1)


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
