"""Segmentations of several models side by side, as colour overlays on the CT slice."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from hkd.figures.style import class_colours, grid_size, new_figure, save_figure, show_slice

OVERLAY_ALPHA = 0.5


def _rows(array, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise ValueError(f"{name}: expected (S, S) or (rows, S, S), got {array.shape}")
    return array


def label_overlay(label: np.ndarray, colours: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """An RGBA image (S, S, 4) colouring each labelled pixel by class; background transparent."""
    label = np.asarray(label, dtype=np.int64)
    if label.min(initial=0) < 0 or label.max(initial=0) >= len(colours):
        raise ValueError(f"label values must lie in 0..{len(colours) - 1}")
    rgba = colours[label].copy()
    rgba[..., 3] *= alpha
    return rgba


def prediction_overlays(out_png: str | Path, image: np.ndarray, ground_truth: np.ndarray,
                        predictions: dict[str, np.ndarray], classes: list[str], *,
                        row_labels: Sequence[str] | None = None, title: str = "",
                        size: tuple[float, float] | None = None, dpi: int = 100) -> Path:
    """Ground truth then each model's prediction over the slice, one panel each, with an organ legend.

    ``image``, ``ground_truth`` and every prediction are (S, S), or (rows, S, S) for one row per slice;
    ``row_labels`` names each row's slice (case and slice index), ``title`` heads the figure.
    """
    images = _rows(image, "image")
    truth = _rows(ground_truth, "ground_truth")
    preds = {name: _rows(p, name) for name, p in predictions.items()}
    for name, arr in [("ground_truth", truth), *preds.items()]:
        if arr.shape != images.shape:
            raise ValueError(f"{name}: shape {arr.shape} differs from the image {images.shape}")
    if row_labels is not None and len(row_labels) != images.shape[0]:
        raise ValueError(f"{len(row_labels)} row labels for {images.shape[0]} rows")
    columns = {"ground truth": truth, **preds}
    colours = class_colours(len(classes))
    rows, cols = images.shape[0], len(columns)
    fig = new_figure(size or grid_size(rows, cols, extra_h=1.5, extra_w=0.9), dpi)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c, (name, labels) in enumerate(columns.items()):
            ax = axes[r, c]
            show_slice(ax, images[r])
            ax.imshow(label_overlay(labels[r], colours), interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    handles = [Patch(facecolor=colours[c], label=classes[c]) for c in range(1, len(classes))]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8,
                   frameon=False)
    return save_figure(fig, out_png)
