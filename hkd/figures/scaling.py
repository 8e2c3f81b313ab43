"""Dice against student size, one line per method, with the teacher as a reference."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hkd.figures.style import new_figure, save_figure

REQUIRED = ("method", "params", "dice_mean", "dice_std")


def dice_vs_params(out_png: str | Path, table: pd.DataFrame, teacher_dice: float | None = None, *,
                   size: tuple[float, float] = (6.0, 4.2), dpi: int = 100) -> Path:
    """Mean Dice (std error bars) vs parameter count (log scale) per method; teacher as a dashed line."""
    missing = [c for c in REQUIRED if c not in table]
    if missing:
        raise ValueError(f"dice_vs_params: table lacks column(s) {missing}")
    fig = new_figure(size, dpi)
    ax = fig.subplots()
    for method, rows in table.groupby("method", sort=False):
        rows = rows.sort_values("params")
        ax.errorbar(rows["params"], rows["dice_mean"], yerr=rows["dice_std"].fillna(0.0), marker="o",
                    markersize=4, capsize=3, linewidth=1.2, label=str(method))
    if teacher_dice is not None:
        ax.axhline(teacher_dice, color="black", linestyle="--", linewidth=1.0, label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("parameters", fontsize=9)
    ax.set_ylabel("mean Dice", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, frameon=False)
    return save_figure(fig, out_png)
