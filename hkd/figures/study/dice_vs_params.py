"""Test Dice against student parameters, one series per method, the teacher as a reference line."""

from __future__ import annotations

from pathlib import Path

from hkd.figures.catalog import Figure
from hkd.figures.scaling import dice_vs_params

FIGURE = Figure(function="draw", inputs=("summary",), caption="dice_vs_params.rst")


def draw(context, out_png: str | Path) -> Path:
    """The summary's students as series; its 'teacher' rows (their mean Dice) as the reference line."""
    table = context.summary
    is_teacher = table["method"].astype(str).eq("teacher") if "method" in table else None
    teacher = None
    if is_teacher is not None and is_teacher.any():
        teacher = float(table.loc[is_teacher, "dice_mean"].mean())
        table = table.loc[~is_teacher]
    return dice_vs_params(out_png, table, teacher)
