"""All study figures from trained checkpoints: every figure of the catalog, drawn from one shared context."""

from __future__ import annotations

import logging
from pathlib import Path

from hkd.figures.catalog import INPUTS, read_catalog
from hkd.figures.context import StudyContext
from hkd.figures.study import drawing_function

log = logging.getLogger("hkd")


def make_study_figures(prepared: Path, models: dict[str, Path], out_dir: Path, *,
                       slice_selection: str | list[tuple[str, int]] = "coverage", organs: list[str] | None = None,
                       n_slices: int = 2, logs: dict[str, Path] | None = None, summary_csv: Path | None = None,
                       device: str = "cpu", runs: dict[str, dict] | None = None,
                       cost_csv: Path | None = None, reliability_csv: Path | None = None) -> list[Path]:
    """Write the figures of the catalog (:mod:`hkd.figures.catalog`) into ``out_dir`` as ``<name>.png``;
    returns the written paths, in the catalog's order.

    The arguments make the shared :class:`hkd.figures.context.StudyContext`: ``models`` maps display
    names to checkpoints (in display order), ``slice_selection``, ``n_slices`` and ``organs`` choose the
    slices and organs shown, ``logs`` maps run names (``METHOD_wWIDTH_sSEED`` or ``teacher``, every seed)
    to ``log.csv`` files, ``summary_csv`` has columns method, params, dice_mean, dice_std (the teacher's
    method is 'teacher'), ``cost_csv`` is ``hkd cost``'s table, ``reliability_csv`` ``hkd tables``' reliability
    bins, and ``runs`` describes each name of ``models`` and ``logs`` (model, method,
    width, seed; default: read from the name by :func:`hkd.figures.runs.describe`). A figure whose inputs
    the study lacks (no models, logs, summary or cost) is skipped; a study that gives no figure its inputs is an
    error.
    """
    figures = read_catalog()
    context = StudyContext(prepared, models, slice_selection=slice_selection, organs=organs, n_slices=n_slices,
                           logs=logs, summary_csv=summary_csv, device=device, runs=runs, cost_csv=cost_csv,
                           reliability_csv=reliability_csv)
    drawn = [f for f in figures if all(context.has(i) for i in f.inputs)]
    for figure in figures:
        if figure not in drawn:
            log.info("skipped %s: the study gives no %s", figure.name,
                     ", ".join(i for i in figure.inputs if not context.has(i)))
    if not drawn:
        raise ValueError(f"no figure to draw: each of {', '.join(f.name for f in figures)} needs an input "
                         "the study does not give (models, logs, summary or cost)")
    context.prepare([i for i in INPUTS if any(i in f.inputs for f in drawn)])
    out_dir = Path(out_dir)
    return [drawing_function(f)(context, out_dir / f.file) for f in drawn]
