"""Dice against student size, one series per method, with the teacher as a reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hkd.figures.style import new_figure, save_figure

REQUIRED = ("method", "params", "dice_mean", "dice_std")
DODGE = 0.035  # decades between neighbouring methods at one width


def dice_vs_params(out_png: str | Path, table: pd.DataFrame, teacher_dice: float | None = None, *,
                   size: tuple[float, float] = (7.0, 4.2), dpi: int = 100) -> Path:
    """Mean Dice vs parameter count (log scale) per method, points at one width dodged sideways.

    Error bars are the standard deviation over seeds; a point from a single seed (``seeds`` column,
    when present) has none. The teacher is a dashed line; the legend sits outside the axes.
    """
    missing = [c for c in REQUIRED if c not in table]
    if missing:
        raise ValueError(f"dice_vs_params: table lacks column(s) {missing}")
    fig = new_figure(size, dpi)
    ax = fig.subplots()
    methods = list(dict.fromkeys(table["method"]))
    for k, method in enumerate(methods):
        rows = table[table["method"] == method].sort_values("params")
        shift = 10 ** (DODGE * (k - (len(methods) - 1) / 2))
        std = rows["dice_std"].astype(float).fillna(0.0).to_numpy()
        if "seeds" in rows:
            std = np.where(rows["seeds"].to_numpy() > 1, std, 0.0)
        ax.errorbar(rows["params"] * shift, rows["dice_mean"], yerr=std, marker="o", markersize=4, capsize=3,
                    linewidth=1.2, label=str(method))
    if teacher_dice is not None:
        ax.axhline(teacher_dice, color="black", linestyle="--", linewidth=1.0, label=f"teacher ({teacher_dice:.3f})")
    ax.set_xscale("log")
    ticks = sorted(set(table["params"]))
    ax.set_xticks(ticks, [f"{p / 1e6:.2g}M" for p in ticks], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel("student parameters (points at one size are spread sideways to stay visible)", fontsize=9)
    ax.set_ylabel("test Dice, mean over seeds", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.set_title("error bars: standard deviation over seeds (none from a single seed)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside right center", fontsize=8, frameon=False)
    return save_figure(fig, out_png)
