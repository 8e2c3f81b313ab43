"""Training curves: loss and validation Dice per epoch for each run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hkd.figures.style import new_figure, save_figure

PANELS = (("loss", "training loss"), ("val_dice", "validation Dice"))


def training_curves(out_png: str | Path, logs: dict[str, pd.DataFrame], *,
                    size: tuple[float, float] = (9.0, 3.6), dpi: int = 100) -> Path:
    """Two panels (loss, val_dice vs epoch), one line per run; a column a log lacks is skipped."""
    fig = new_figure(size, dpi)
    axes = fig.subplots(1, len(PANELS), squeeze=False)[0]
    for ax, (column, label) in zip(axes, PANELS):
        for run, log in logs.items():
            if "epoch" in log and column in log:
                ax.plot(log["epoch"], log[column], marker="o", markersize=2.5, linewidth=1.2, label=run)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel(label, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    if logs:
        handles, names = axes[0].get_legend_handles_labels()
        if not handles:
            handles, names = axes[1].get_legend_handles_labels()
        if handles:
            fig.legend(handles, names, loc="outside right center", fontsize=7, frameon=False)
    return save_figure(fig, out_png)
