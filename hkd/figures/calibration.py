"""Reliability diagrams: accuracy against confidence around the organs, per student width."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hkd.figures.style import new_figure, save_figure


def reliability_diagrams(out_png: str | Path, table: pd.DataFrame, *, panel: tuple[float, float] = (3.6, 3.6),
                         dpi: int = 100) -> Path:
    """One panel per student width: each method's accuracy against its mean confidence per bin (``hkd tables``'
    reliability.csv: pooled over seeds and test cases), the teacher in every panel (black, dashed), the
    diagonal a perfectly calibrated model would follow. Bins without pixels are left out."""
    table = table[table["pixels"] > 0]
    teacher = table[table["method"] == "teacher"]
    widths = [w for w in dict.fromkeys(table.loc[table["method"] != "teacher", "width"].astype(str))]
    if not widths:
        raise ValueError("reliability diagrams: the reliability table holds no student")
    fig = new_figure((panel[0] * len(widths) + 1.6, panel[1]), dpi)
    axes = fig.subplots(1, len(widths), sharey=True, squeeze=False)[0]
    for ax, width in zip(axes, widths):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        if len(teacher):
            ax.plot(teacher["confidence"], teacher["accuracy"], color="black", linestyle="--", marker=".",
                    linewidth=1.0, label="teacher")
        rows = table[(table["width"].astype(str) == width) & (table["method"] != "teacher")]
        for method, g in rows.groupby("method", sort=False):
            ax.plot(g["confidence"], g["accuracy"], marker="o", markersize=3, linewidth=1.2, label=str(method))
        ax.set_title(f"student {width}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (largest class probability)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy", fontsize=8)
    fig.suptitle("Reliability around the organs (test cases, before temperature scaling)", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return save_figure(fig, out_png)
