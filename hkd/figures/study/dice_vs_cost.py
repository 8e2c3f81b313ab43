"""Test Dice against CPU latency per slice, beside Dice against parameters: what a student saves."""

from __future__ import annotations

from pathlib import Path

from hkd.figures.catalog import Figure
from hkd.figures.cost import dice_vs_cost

FIGURE = Figure(function="draw", inputs=("summary", "cost"), caption="dice_vs_cost.rst")


def draw(context, out_png: str | Path) -> Path:
    """The summary's models (students by method, the teacher as a star), each at its fastest runtime's latency."""
    return dice_vs_cost(out_png, context.summary, context.cost)
