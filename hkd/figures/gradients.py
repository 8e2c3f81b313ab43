"""Gradient balance of distillation: each distillation term's gradient norm relative to the segmentation loss's.

Training logs hold, per epoch, ``gradnorm_seg`` (norm of the segmentation loss's gradient with respect
to the student's weights) and ``gradnorm_<term>`` for each distillation term of the run. A ratio far
below 1 means the term barely steers the student; far above, it drowns the segmentation loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from hkd.figures.runs import describe
from hkd.figures.style import new_figure, save_figure

SEG = "gradnorm_seg"
PREFIX = "gradnorm_"
BAND = (0.1, 10.0)
TERM_STYLES = ("-", "--", ":", "-.")


def ratio_terms(log: pd.DataFrame) -> list[str]:
    """The distillation terms logged with a gradient norm: every ``gradnorm_*`` column but ``gradnorm_seg``."""
    if SEG not in log:
        return []
    return [c[len(PREFIX):] for c in log.columns if c.startswith(PREFIX) and c != SEG]


def gradient_ratios(out_png: str | Path, logs: dict[str, pd.DataFrame], *, runs: dict[str, dict] | None = None,
                    size: tuple[float, float] | None = None, dpi: int = 100) -> Path:
    """One panel per distilled method: gradnorm_<term> / gradnorm_seg per epoch, log y axis, 0.1x-10x shaded.

    Every run (width and seed) is a line: a colour per width, a line style per term. ``runs`` describes
    each log's run (method, width, seed); without it the names are read by
    :func:`hkd.figures.runs.describe`. Runs without distillation gradient norms are left out, and a
    figure without any says so.
    """
    series: dict[str, list[tuple[dict, str, pd.DataFrame]]] = {}
    for name, log in logs.items():
        run = describe(name, runs)
        for term in ratio_terms(log):
            series.setdefault(run["method"], []).append((run, term, log))
    methods = list(series) or [""]
    fig = new_figure(size or (3.6 * len(methods) + 1.6, 3.8), dpi)
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    widths = list(dict.fromkeys(run["width"] for items in series.values() for run, _, _ in items))
    colour = {w: f"C{i % 10}" for i, w in enumerate(widths)}
    terms = list(dict.fromkeys(term for items in series.values() for _, term, _ in items))
    style = {t: TERM_STYLES[i % len(TERM_STYLES)] for i, t in enumerate(terms)}
    for ax, method in zip(axes, methods):
        ax.axhspan(*BAND, color="0.9", zorder=0)
        ax.axhline(1.0, color="0.6", linewidth=0.8, zorder=1)
        for run, term, log in series.get(method, []):
            seg = log[SEG].astype(float).to_numpy()
            value = log[PREFIX + term].astype(float).to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where((seg > 0) & (value > 0), value / seg, np.nan)
            ax.plot(log["epoch"], ratio, color=colour[run["width"]], linestyle=style[term], linewidth=1.1,
                    marker="o", markersize=2)
        ax.set_yscale("log")
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_title(method or "no distillation gradient norms in the training logs", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("|grad distillation term| / |grad segmentation loss|", fontsize=8)
    if not series:
        axes[0].set_ylim(*BAND)
        axes[0].text(0.5, 0.5, "the logs have no gradnorm_seg and\ngradnorm_<term> columns", ha="center",
                     va="center", transform=axes[0].transAxes, fontsize=8)
    handles = [Line2D([], [], color=colour[w], label=f"width {w}") for w in widths]
    handles += [Line2D([], [], color="black", linestyle=style[t], label=t) for t in terms]
    handles.append(Line2D([], [], color="0.9", linewidth=6, label=f"{BAND[0]:g}x to {BAND[1]:g}x"))
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False,
               title="one line per run\n(every width and seed)", title_fontsize=7)
    return save_figure(fig, out_png)
