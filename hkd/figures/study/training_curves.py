"""Loss and validation Dice per epoch of every run, every seed."""

from __future__ import annotations

from pathlib import Path

from hkd.figures.catalog import Figure
from hkd.figures.curves import training_curves

FIGURE = Figure(function="draw", inputs=("logs",), caption="training_curves.rst")


def draw(context, out_png: str | Path) -> Path:
    return training_curves(out_png, context.logs, runs=context.runs)
