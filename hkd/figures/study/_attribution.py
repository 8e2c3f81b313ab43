"""Attribution figures of the study: each model's map of each organ on the selected slices."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hkd.figures.attributions import attribution_grid

# explain(model, spec, image (1, 1, S, S), class id) -> (S, S) attribution map
Explain = Callable[[torch.nn.Module, dict, torch.Tensor, int], np.ndarray]


def draw_attributions(context, out_png: str | Path, explain: Explain, kind: str, blank_note: str) -> Path:
    """One column per (slice, organ) of ``context.targets``, over the slice with the organ outlined; a panel
    says when its model predicts none of the organ there (its map is then of the whole-slice score)."""
    classes, where, truths = context.classes, context.where, context.truths
    columns = {(i, c): f"{classes[c]}\ncase {where[i][0]}, slice {where[i][1]}" for i, c in context.targets}
    notes = {name: {columns[i, c]: f"predicts no {classes[c]}: whole-slice score"
                    for i, c in context.targets if not (context.predictions[name][i] == c).any()}
             for name in context.models}
    backdrops = {columns[i, c]: context.shown[i] for i, c in context.targets}
    outlines = {columns[i, c]: truths[i] == c for i, c in context.targets}
    maps = {name: {columns[i, c]: explain(model, spec, context.images[i:i + 1], c) for i, c in context.targets}
            for name, (model, spec) in context.loaded.items()}
    seeds = context.seeds_note
    return attribution_grid(out_png, backdrops, maps, kind + (f" ({seeds})" if seeds else ""), outlines=outlines,
                            notes=notes, blank_note=blank_note)
