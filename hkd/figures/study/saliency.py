"""Input saliency of each model for each organ on the selected slices."""

from __future__ import annotations

from pathlib import Path

from hkd.explain import saliency
from hkd.figures.catalog import Figure
from hkd.figures.study._attribution import draw_attributions

FIGURE = Figure(function="draw", inputs=("models",), caption="saliency.rst")


def draw(context, out_png: str | Path) -> Path:
    return draw_attributions(context, out_png, lambda model, spec, x, c: saliency(model, x, c), "Saliency",
                             "zero map")
