"""Grad-CAM of each model for each organ on the selected slices, at each model's Grad-CAM layer."""

from __future__ import annotations

from pathlib import Path

from hkd.explain import gradcam
from hkd.figures.catalog import Figure
from hkd.figures.study._attribution import draw_attributions
from hkd.models import gradcam_layer

FIGURE = Figure(function="draw", inputs=("models",), caption="gradcam.rst")


def draw(context, out_png: str | Path) -> Path:
    return draw_attributions(context, out_png, lambda model, spec, x, c: gradcam(model, x, c, gradcam_layer(spec)),
                             "Grad-CAM", "zero map: no positive evidence")
