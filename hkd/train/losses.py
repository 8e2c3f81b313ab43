"""The segmentation loss shared by every run: 0.5 cross-entropy + 0.5 soft Dice (TransUNet's).

Pixels labelled :data:`hkd.train.augment.IGNORE` (outside a rotated slice) count in neither term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hkd.train.augment import IGNORE

SEGMENTATION_TERMS = ("ce", "dice")


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


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Named terms ``ce`` and ``dice``, each already weighted by 0.5."""
    return {"ce": 0.5 * F.cross_entropy(logits.float(), target, ignore_index=IGNORE),
            "dice": 0.5 * soft_dice_loss(logits, target)}
