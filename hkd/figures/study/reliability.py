"""Reliability diagrams: is a student's confidence around the organs what its accuracy turns out to be?"""

from __future__ import annotations

from pathlib import Path

from hkd.figures.calibration import reliability_diagrams
from hkd.figures.catalog import Figure

FIGURE = Figure(function="draw", inputs=("reliability",), caption="reliability.rst")


def draw(context, out_png: str | Path) -> Path:
    """Per student width, each method's reliability curve beside the teacher's."""
    return reliability_diagrams(out_png, context.reliability)
