"""Training curves: loss and validation Dice per epoch for every run, every seed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.lines import Line2D

from hkd.figures.runs import describe
from hkd.figures.style import new_figure, save_figure

PANELS = (("loss", "training loss"), ("val_dice", "validation Dice"))
SEED_STYLES = ("-", "--", ":", "-.")


def training_curves(out_png: str | Path, logs: dict[str, pd.DataFrame], *, runs: dict[str, dict] | None = None,
                    size: tuple[float, float] = (10.0, 3.8), dpi: int = 100) -> Path:
    """Two panels (loss, val_dice vs epoch), one line per run: a colour per model, a line style per seed.

    ``runs`` describes each log's run (model, method, width, seed); without it the names are read by
    :func:`hkd.figures.runs.describe`. A column a log lacks is skipped.
    """
    fig = new_figure(size, dpi)
    axes = fig.subplots(1, len(PANELS), squeeze=False)[0]
    runs = {name: describe(name, runs) for name in logs}
    models = list(dict.fromkeys(r["model"] for r in runs.values()))
    seeds = sorted({r["seed"] for r in runs.values() if r["seed"] is not None}, key=int)
    colour = {m: f"C{i % 10}" for i, m in enumerate(models)}
    style = {s: SEED_STYLES[i % len(SEED_STYLES)] for i, s in enumerate(seeds)}
    for ax, (column, label) in zip(axes, PANELS):
        for name, log in logs.items():
            run = runs[name]
            if "epoch" in log and column in log:
                ax.plot(log["epoch"], log[column], color=colour[run["model"]], linestyle=style.get(run["seed"], "-"),
                        marker="o", markersize=2, linewidth=1.1)
        ax.set_xlabel("epoch", fontsize=9)
        ax.set_ylabel(label, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colour[m], label=m) for m in models]
    handles += [Line2D([], [], color="black", linestyle=style[s], label=f"seed {s}") for s in seeds]
    if handles:
        fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    fig.suptitle(f"every run: {len(logs)} logs" + (f", seeds {', '.join(seeds)}" if seeds else ""), fontsize=9)
    return save_figure(fig, out_png)
