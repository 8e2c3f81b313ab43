"""The study figures, one module each, named as the figure: read by :mod:`hkd.figures.catalog`.

A module declares its entry (``FIGURE = Figure(function=..., inputs=..., caption=...)``) and the
function that draws it from the study context; :func:`drawing_function` imports the module of one
figure when it is drawn.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from hkd.figures.catalog import Figure


def drawing_function(figure: Figure) -> Callable[..., Path]:
    """The function that draws ``figure``: ``function(context, out_png) -> Path``."""
    module = importlib.import_module(f"{__name__}.{figure.name}")
    return getattr(module, figure.function)
