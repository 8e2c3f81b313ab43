"""The validation score a run logs every epoch and keeps its best checkpoint by: Dice (and IoU) per class."""

from __future__ import annotations

import torch

from hkd.data.dataset import SliceSet
from hkd.devices import autocast


@torch.no_grad()
def validation_dice_iou(model: torch.nn.Module, data: SliceSet, num_classes: int, device, batch_size: int = 32,
                        precision: str = "auto") -> dict:
    """Per-class Dice and IoU pooled over all validation slices (intersection and sums accumulated), and
    their means over the foreground classes (``mean_dice``, ``mean_iou``); a class absent from both the
    prediction and the labels scores NaN and is left out of the means."""
    model.eval()
    inter = torch.zeros(num_classes, dtype=torch.float64)
    psum = torch.zeros(num_classes, dtype=torch.float64)
    gsum = torch.zeros(num_classes, dtype=torch.float64)
    for i in range(0, len(data), batch_size):
        x = data.image[i:i + batch_size].to(device).float()
        y = data.label[i:i + batch_size].cpu()
        with autocast(device, precision):
            pred = model(x).argmax(1).cpu()
        for c in range(num_classes):
            p, g = pred == c, y == c
            inter[c] += (p & g).sum()
            psum[c] += p.sum()
            gsum[c] += g.sum()
    dice = torch.where(psum + gsum > 0, 2 * inter / (psum + gsum).clamp(min=1), torch.nan)
    iou = torch.where(psum + gsum > 0, inter / (psum + gsum - inter).clamp(min=1), torch.nan)
    fg = slice(1, num_classes)
    return {"dice": dice.tolist(), "iou": iou.tolist(),
            "mean_dice": float(torch.nanmean(dice[fg])), "mean_iou": float(torch.nanmean(iou[fg]))}
