"""Each distillation term's gradient norm over the segmentation loss's, per block of the student."""

from __future__ import annotations

from pathlib import Path

from hkd.figures.catalog import Figure
from hkd.figures.gradients import gradient_ratios

FIGURE = Figure(function="draw", inputs=("logs",), caption="grad_ratios.rst")


def draw(context, out_png: str | Path) -> Path:
    return gradient_ratios(out_png, context.logs, runs=context.runs)
