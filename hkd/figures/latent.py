"""Latent-space structure: a 2-component PCA of each model's per-position latent vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from hkd.figures.style import class_colours, new_figure, save_figure

BACKGROUND_GREY = (0.75, 0.75, 0.75, 0.5)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, D) rows onto their first two principal components.

    Returns (N, 2) scores and the explained-variance ratios (2,). Component signs are fixed (largest
    loading positive), so the plot does not flip between runs; missing components are zero.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected (N, D) latent vectors, got {x.shape}")
    x = x - x.mean(axis=0, keepdims=True)
    scores, ratio = np.zeros((x.shape[0], 2)), np.zeros(2)
    if x.shape[0] < 2 or not np.any(x):
        return scores, ratio
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(2, len(s))
    for i in range(k):
        sign = np.sign(vt[i][np.argmax(np.abs(vt[i]))]) or 1.0
        scores[:, i] = u[:, i] * s[i] * sign
    ratio[:k] = s[:k] ** 2 / np.sum(s ** 2)
    return scores, ratio


def latent_pca(out_png: str | Path, latents: dict[str, np.ndarray], organ_labels: np.ndarray | dict[str, np.ndarray],
               classes: list[str], *, note: str = "", size: tuple[float, float] | None = None,
               dpi: int = 100) -> Path:
    """One PCA scatter per model (fit per model), points coloured by the organ under each latent position.

    ``organ_labels`` is one (N,) class-id array shared by all models, or a dict model -> array.
    ``note`` (what a point is, which slices) is printed under the panels.
    """
    if not latents:
        raise ValueError("latent_pca needs at least one model")
    colours = class_colours(len(classes))
    cols = min(len(latents), 5)
    rows = -(-len(latents) // cols)
    fig = new_figure(size or (2.9 * cols + 0.4, 2.9 * rows + 1.0), dpi)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    present: set[int] = set()
    for ax, (name, z) in zip(axes, latents.items()):
        labels = np.asarray(organ_labels[name] if isinstance(organ_labels, dict) else organ_labels, dtype=np.int64)
        if labels.shape != (len(z),):
            raise ValueError(f"{name}: {len(z)} latent vectors but organ labels of shape {labels.shape}")
        scores, ratio = pca_2d(z)
        order = np.argsort(labels > 0, kind="stable")  # organs drawn on top of background
        point_colours = np.where((labels[order] > 0)[:, None], colours[labels[order]], BACKGROUND_GREY)
        ax.scatter(scores[order, 0], scores[order, 1], c=point_colours, s=7, linewidths=0)
        present.update(int(c) for c in np.unique(labels))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% of variance)", fontsize=8)
        ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}%)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(latents):]:
        ax.set_axis_off()
    handles = [Line2D([], [], marker="o", linestyle="", markersize=5,
                      color=colours[c] if c > 0 else BACKGROUND_GREY, label=classes[c]) for c in sorted(present)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=8, frameon=False,
               title=note or None, title_fontsize=8)
    return save_figure(fig, out_png)
