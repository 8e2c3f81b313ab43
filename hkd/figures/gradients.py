"""Gradient balance of distillation, per block of the student: each term's gradient norm over the
segmentation loss's in the same block (:mod:`hkd.train.gradient_balance`).

A ratio far below 1 means the term barely steers that block; far above, it drowns the segmentation loss
there. Logs written before per-block norms show the whole-student ratio only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hkd.figures.runs import parse_run
from hkd.figures.style import new_figure, save_figure
from hkd.train.gradient_balance import BAND, block_ratios, terms

WHOLE = "model"  # block_ratios' name for the whole-student ratio


def ratio_terms(log: pd.DataFrame) -> list[str]:
    """The distillation terms logged with a gradient norm next to the segmentation loss's."""
    return terms(log)


def _runs(logs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    frames = []
    for name, log in logs.items():
        ratios = block_ratios(log)
        if not ratios.empty:
            run = parse_run(name)
            frames.append(ratios.assign(method=run["method"], width=str(run["width"]), seed=run["seed"]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def gradient_ratios(out_png: str | Path, logs: dict[str, pd.DataFrame], *,
                    size: tuple[float, float] | None = None, dpi: int = 100) -> Path:
    """One panel per distillation term (columns: method and term) and width (rows): per student block, the
    median over seeds of ``gradnorm_<term>@<block> / gradnorm_seg@<block>`` per epoch, and the whole-student
    ratio (black, dashed); log y axis, 0.1x-10x shaded.

    Blocks the term does not reach (ratio 0 throughout) are listed under the panel instead of drawn. Run
    names follow :func:`hkd.figures.runs.parse_run`; runs without distillation gradient norms are left out,
    and a figure without any says so.
    """
    data = _runs(logs)
    panels = list(dict.fromkeys(zip(data["method"], data["term"]))) if not data.empty else [("", "")]
    widths = list(dict.fromkeys(data["width"])) if not data.empty else [""]
    blocks = list(dict.fromkeys(b for b in data.get("block", []) if b != WHOLE))
    colour = {b: f"C{i % 10}" if len(blocks) <= 10 else _tab20(i) for i, b in enumerate(blocks)}
    fig = new_figure(size or (3.0 * len(panels) + 1.6, 2.6 * len(widths) + 0.6), dpi)
    axes = fig.subplots(len(widths), len(panels), squeeze=False, sharey=True, sharex=True)
    median = ({key: g.groupby("epoch")["ratio"].median()
               for key, g in data.groupby(["method", "term", "width", "block"], sort=False)}
              if not data.empty else {})
    for r, width in enumerate(widths):
        for c, (method, term) in enumerate(panels):
            ax = axes[r, c]
            ax.axhspan(*BAND, color="0.9", zorder=0)
            ax.axhline(1.0, color="0.6", linewidth=0.8, zorder=1)
            unreached = []
            for block in [*blocks, WHOLE]:
                key = (method, term, width, block)
                if key not in median:
                    continue
                series = median[key]
                values = series.to_numpy(dtype=float)
                if block != WHOLE and not (values > 0).any():
                    unreached.append(block)
                    continue
                ax.plot(series.index, np.where(values > 0, values, np.nan), linewidth=1.8 if block == WHOLE else 1.0,
                        color="black" if block == WHOLE else colour[block], linestyle="--" if block == WHOLE else "-",
                        marker=None if block == WHOLE else "o", markersize=2, zorder=3 if block == WHOLE else 2)
            if unreached:
                ax.text(0.02, 0.02, "0 in " + ", ".join(unreached), transform=ax.transAxes, fontsize=6,
                        va="bottom", color="0.3")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            if r == 0:
                ax.set_title(f"{method}: {term}" if method else "no distillation gradient norms in the training logs",
                             fontsize=8)
            if r == len(widths) - 1:
                ax.set_xlabel("epoch", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"width {width}\nterm / segmentation" if width else "term / segmentation", fontsize=8)
    if data.empty:
        axes[0, 0].set_ylim(*BAND)
        axes[0, 0].text(0.5, 0.5, "the logs have no gradnorm_seg and\ngradnorm_<term> columns", ha="center",
                        va="center", transform=axes[0, 0].transAxes, fontsize=8)
    handles = [Line2D([], [], color=colour[b], marker="o", markersize=2, label=b) for b in blocks]
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.8, label="whole student"))
    handles.append(Line2D([], [], color="0.9", linewidth=6, label=f"{BAND[0]:g}x to {BAND[1]:g}x"))
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False,
               title="block of the student\n(median over seeds)", title_fontsize=7)
    return save_figure(fig, out_png)


def _tab20(i: int):
    from matplotlib import colormaps

    return colormaps["tab20"](i % 20)
