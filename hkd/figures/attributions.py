"""Attribution heat maps (saliency or Grad-CAM): rows are models, columns are organs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from hkd.figures.style import grid_size, new_figure, save_figure, show_slice

HEAT_ALPHA = 0.7
CMAP = "jet"


def heat_overlay(attribution: np.ndarray, cmap: str = CMAP) -> np.ndarray:
    """RGBA (S, S, 4) of a map scaled to its maximum; opacity grows with the value, so zeros are clear."""
    a = np.nan_to_num(np.abs(np.asarray(attribution, dtype=np.float64)))
    peak = a.max(initial=0.0)
    a = a / peak if peak > 0 else a
    rgba = colormaps[cmap](a)
    rgba[..., 3] = HEAT_ALPHA * a
    return rgba


def _note(ax, text: str) -> None:
    """A short note across the middle of a panel, wrapped to the panel's width."""
    ax.text(0.5, 0.03, textwrap.fill(text, 24), transform=ax.transAxes, ha="center", va="bottom", fontsize=6,
            color="black", clip_on=True, bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5})


def attribution_grid(out_png: str | Path, image: np.ndarray | dict[str, np.ndarray],
                     maps: dict[str, dict[str, np.ndarray]], kind: str, *,
                     outlines: dict[str, np.ndarray] | None = None,
                     notes: dict[str, dict[str, str]] | None = None, blank_note: str = "map is zero everywhere",
                     size: tuple[float, float] | None = None, dpi: int = 100) -> Path:
    """Heat maps over the slice: one row per model (``maps`` keys), one column per organ.

    ``maps[model][column]`` is an (S, S) map; each panel is scaled to its own maximum (the colour bar
    reads as a fraction of it). ``image`` is the slice, or a dict column -> slice when the columns come
    from different slices. ``outlines`` (column -> organ mask) draws the organ boundary in white.
    ``notes[model][column]`` is written on a panel (why it looks as it does); a panel whose map is zero
    everywhere, or missing, says so (``blank_note``). ``kind`` ('Saliency', 'Grad-CAM') titles the figure.
    """
    models = list(maps)
    columns = list(dict.fromkeys(col for per_model in maps.values() for col in per_model))
    if not models or not columns:
        raise ValueError("attribution_grid needs at least one model and one organ")
    notes = notes or {}
    fig = new_figure(size or grid_size(len(models), len(columns), extra_w=1.5, extra_h=1.2), dpi)
    axes = fig.subplots(len(models), len(columns), squeeze=False)
    for r, model in enumerate(models):
        for c, col in enumerate(columns):
            ax = axes[r, c]
            show_slice(ax, image[col] if isinstance(image, dict) else image)
            heat = maps[model].get(col)
            if heat is not None:
                ax.imshow(heat_overlay(heat), interpolation="bilinear")
            if outlines is not None and col in outlines and np.any(outlines[col]):
                ax.contour(np.asarray(outlines[col], dtype=float), levels=[0.5], colors="white", linewidths=0.8)
            text = notes.get(model, {}).get(col)
            if heat is None or not np.any(np.nan_to_num(heat)):
                text = f"{text}; {blank_note}" if text else blank_note
            if text:
                _note(ax, text)
            if r == 0:
                ax.set_title(col, fontsize=8)
            if c == 0:
                ax.set_ylabel(model, fontsize=8)
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap=CMAP), ax=axes, shrink=0.6, pad=0.02)
    bar.set_label("attribution / panel maximum", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(f"{kind}: each panel scaled to its own maximum\nwhite outline: the organ in the ground truth; "
                 "rows: models; columns: organ, case and slice", fontsize=9)
    return save_figure(fig, out_png)
