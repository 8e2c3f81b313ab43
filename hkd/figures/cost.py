"""Test Dice against CPU latency per slice, beside Dice against parameters: what a student saves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hkd.figures.style import new_figure, save_figure

SUMMARY_COLUMNS = ("method", "params", "dice_mean")  # what it reads of hkd tables' summary.csv


def dice_vs_cost(out_png: str | Path, summary: pd.DataFrame, cost: pd.DataFrame, *,
                 size: tuple[float, float] = (10.0, 4.2), dpi: int = 100) -> Path:
    """Two panels sharing the Dice axis: latency of one slice (each model in its fastest fp32 runtime, log scale)
    and parameters (log scale). One series per method; the teacher as a black star. Models are matched to
    their cost row by parameter count (one architecture per count)."""
    if "precision" in cost:  # fp32 only: a reduced precision is a choice the figure does not make for the user
        cost = cost[cost["precision"] == "fp32"]
    fastest = cost.sort_values("latency_ms").drop_duplicates("params").set_index("params")
    table = summary[summary["params"].isin(fastest.index)].copy()
    if table.empty:
        raise ValueError("dice_vs_cost: no model of the summary has a cost row (matched by parameter count)")
    table["latency_ms"] = table["params"].map(fastest["latency_ms"])
    table["runtime"] = table["params"].map(fastest["runtime"])
    threads = sorted(set(cost["threads"]))
    fig = new_figure(size, dpi)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, column, xlabel in ((axes[0], "latency_ms", f"CPU latency per slice, ms ({', '.join(map(str, threads))} "
                                "thread(s), batch 1, fastest fp32 runtime)"),
                               (axes[1], "params", "parameters")):
        for method, rows in table.groupby("method", sort=False):
            rows = rows.sort_values(column)
            if method == "teacher":
                ax.plot(rows[column], rows["dice_mean"], marker="*", markersize=12, color="black", linestyle="",
                        label="teacher")
            else:
                ax.plot(rows[column], rows["dice_mean"], marker="o", markersize=4, linewidth=1.2, label=str(method))
        ax.set_xscale("log")
        ticks = sorted(set(table[column]))
        labels = ([f"{t:.3g}" for t in ticks] if column == "latency_ms" else
                  [f"{t / 1e6:.3g}M" if t >= 1e5 else f"{t / 1e3:.3g}k" for t in ticks])
        ax.set_xticks(ticks, labels, minor=False)
        ax.set_xticks([], minor=True)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, which="both")
    for _, r in table.drop_duplicates("params").iterrows():
        axes[0].annotate(r["runtime"], (r["latency_ms"], r["dice_mean"]), fontsize=6, alpha=0.6,
                         xytext=(3, -9), textcoords="offset points")
    axes[0].set_ylabel("test Dice, mean over seeds", fontsize=9)
    fig.suptitle("What a student saves: test Dice against latency and against size", fontsize=10)
    if axes[0].get_legend_handles_labels()[0]:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=8, frameon=False)
    return save_figure(fig, out_png)
