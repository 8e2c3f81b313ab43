"""The segmentation loss of every run: 0.5 cross-entropy + 0.5 soft Dice (TransUNet's, the default), or
0.5 focal loss (gamma 2) + 0.5 soft Dice (HLFD's).

Pixels labelled :data:`hkd.data.tasks.IGNORE` (outside a rotated slice) count in no term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hkd.data.tasks import IGNORE

SEGMENTATION_TERMS = ("ce", "dice")
#: ``train.loss`` choices -> the names of their two terms.
LOSSES = {"ce_dice": ("ce", "dice"), "focal_dice": ("focal", "dice")}
FOCAL_GAMMA = 2.0


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Mean over all classes (background included) of 1 - soft Dice with squared denominators."""
    probs = torch.softmax(logits.float(), dim=1)
    valid = (target != IGNORE)
    onehot = F.one_hot(torch.where(valid, target, 0), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    mask = valid[:, None].to(probs.dtype)
    probs, onehot = probs * mask, onehot * mask
    dims = (0, 2, 3)
    intersect = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    return (1.0 - (2 * intersect + smooth) / (denom + smooth)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Multi-class focal loss, mean over the valid pixels of -(1 - p_t)^gamma log p_t (gamma 0: cross-entropy)."""
    log_p = torch.log_softmax(logits.float(), dim=1)
    valid = target != IGNORE
    log_pt = log_p.gather(1, torch.where(valid, target, 0)[:, None])[:, 0]
    loss = -((1.0 - log_pt.exp()) ** gamma) * log_pt
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "ce_dice") -> dict[str, torch.Tensor]:
    """Named terms, each already weighted by 0.5: ``ce`` and ``dice`` (``ce_dice``) or ``focal`` and
    ``dice`` (``focal_dice``)."""
    if kind not in LOSSES:
        raise ValueError(f"training config: unknown loss '{kind}'; known: {', '.join(LOSSES)}")
    first = (F.cross_entropy(logits.float(), target, ignore_index=IGNORE) if kind == "ce_dice"
             else focal_loss(logits, target))
    return {LOSSES[kind][0]: 0.5 * first, "dice": 0.5 * soft_dice_loss(logits, target)}
