"""Shared figure plumbing: Agg figures of an exact pixel size, atomic PNG output, class colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from hkd.io import atomic_path

# fixed organ colours, indexed by class id (0 = background, transparent); more classes reuse the cycle
ORGAN_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
                 "#bfef45", "#9a6324", "#469990", "#800000", "#000075", "#aaffc3", "#808000", "#fabed4")


def class_colours(n_classes: int) -> np.ndarray:
    """RGBA colours (n_classes, 4): background fully transparent, organs opaque."""
    colours = np.zeros((n_classes, 4))
    for c in range(1, n_classes):
        colours[c] = to_rgba(ORGAN_COLOURS[(c - 1) % len(ORGAN_COLOURS)])
    return colours


def new_figure(size: tuple[float, float], dpi: int = 100) -> Figure:
    """A figure on an Agg canvas (no pyplot state), laid out with constrained layout."""
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_png: str | Path) -> Path:
    """Write ``fig`` as a PNG of exactly ``figsize * dpi`` pixels, atomically and without a timestamp."""
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi, metadata={"Software": None})
    fig.clear()
    return out_png


def grid_size(rows: int, cols: int, panel: float = 1.8, extra_w: float = 0.6, extra_h: float = 0.9):
    """A figure size (inches) for a rows x cols grid of square panels."""
    return (panel * cols + extra_w, panel * rows + extra_h)


def show_slice(ax, image: np.ndarray) -> None:
    """A CT slice (intensities in [0, 1]) in grey, without axis ticks."""
    ax.imshow(np.asarray(image, dtype=np.float32), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
