"""The selected validation slices: ground truth and every model's segmentation."""

from __future__ import annotations

from pathlib import Path

from hkd.figures.catalog import Figure
from hkd.figures.overlays import prediction_overlays

FIGURE = Figure(function="draw", inputs=("models",), caption="overlays.rst")


def draw(context, out_png: str | Path) -> Path:
    seeds = context.seeds_note
    return prediction_overlays(out_png, context.shown, context.truths, context.predictions, context.classes,
                               row_labels=[f"case {c}, slice {s}" for c, s in context.where],
                               title="validation slices" + (f"; {seeds}" if seeds else ""))
