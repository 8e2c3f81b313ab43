"""Attribution heat maps (saliency or Grad-CAM): rows are models, columns are organs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps

from hkd.figures.style import grid_size, new_figure, save_figure, show_slice

HEAT_ALPHA = 0.7


def heat_overlay(attribution: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """RGBA (S, S, 4) of a map scaled to its maximum; opacity grows with the value, so zeros are clear."""
    a = np.nan_to_num(np.abs(np.asarray(attribution, dtype=np.float64)))
    peak = a.max(initial=0.0)
    a = a / peak if peak > 0 else a
    rgba = colormaps[cmap](a)
    rgba[..., 3] = HEAT_ALPHA * a
    return rgba


def attribution_grid(out_png: str | Path, image: np.ndarray | dict[str, np.ndarray],
                     maps: dict[str, dict[str, np.ndarray]], kind: str, *,
                     outlines: dict[str, np.ndarray] | None = None,
                     size: tuple[float, float] | None = None, dpi: int = 100) -> Path:
    """Heat maps over the slice: one row per model (``maps`` keys), one column per organ.

    ``maps[model][column]`` is an (S, S) map; each panel is scaled to its own maximum. ``image`` is
    the slice, or a dict column -> slice when the columns come from different slices. ``outlines``
    (column -> organ mask) draws the organ boundary. ``kind`` ('Saliency', 'Grad-CAM') titles the figure.
    """
    models = list(maps)
    columns = list(dict.fromkeys(col for per_model in maps.values() for col in per_model))
    if not models or not columns:
        raise ValueError("attribution_grid needs at least one model and one organ")
    fig = new_figure(size or grid_size(len(models), len(columns), extra_w=0.9), dpi)
    axes = fig.subplots(len(models), len(columns), squeeze=False)
    for r, model in enumerate(models):
        for c, col in enumerate(columns):
            ax = axes[r, c]
            show_slice(ax, image[col] if isinstance(image, dict) else image)
            if col in maps[model]:
                ax.imshow(heat_overlay(maps[model][col]), interpolation="bilinear")
            if outlines is not None and col in outlines and np.any(outlines[col]):
                ax.contour(np.asarray(outlines[col], dtype=float), levels=[0.5], colors="white", linewidths=0.8)
            if r == 0:
                ax.set_title(col, fontsize=8)
            if c == 0:
                ax.set_ylabel(model, fontsize=8)
    fig.suptitle(f"{kind} (each panel scaled to its maximum)", fontsize=10)
    return save_figure(fig, out_png)
