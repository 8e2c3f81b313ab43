"""Study tables: per model (method x width) mean and std over seeds, overall and per organ.

Conventions (the report captions state them):

- Dice, IoU, VOE and RVD average the (case, organ) pairs whose ground truth holds the organ; a missed
  organ (empty prediction) counts 0 (Dice, IoU), 1 (VOE) or -1 (RVD). "Organ" is any class of the
  study: an organ, or a tumour.
- ``hd95_mm`` and ``hd95_vox`` average only the pairs where both masks are non-empty: an empty
  prediction has no surface distance, so it is left out, and counted in ``empty_pred`` beside the
  mean (one count per run, in seed order) out of ``gt_pairs`` pairs per run.
- ``hd95_vox_transunet`` is TransUNet's number: every (case, organ) pair, with 0 for an empty
  prediction or ground truth (so a model that misses an organ gets the best HD95 there).
- Per run, pairs are averaged per organ over cases, then over organs (TransUNet's order).
- A standard deviation over one seed is undefined: it is left empty in the CSV, ``n/a`` in print.
- ``converged`` counts the runs that converged (:mod:`hkd.train.convergence`) out of the runs whose
  convergence is known (runs trained before it was recorded are counted apart as unknown), ``stalled``
  the runs that ended with most organs at a validation Dice of 0.1 or less, the same way;
  ``gradient_flagged`` counts the runs where a distillation term dominated a block of the student after the
  warm-up (:mod:`hkd.train.gradient_balance`).
- The width is shown as ``preset`` (the SqueezeUNet preset name, when configured as one, or the label of
  a student of ``students.models``), ``multiplier`` (SqueezeUNet's channel-width multiplier, as configured
  or the preset's) and ``params``
  (trainable parameters of the evaluated model, counted by ``hkd evaluate``).
"""

from __future__ import annotations

import html

import pandas as pd

from hkd.evaluate.metrics import CASE_ROW, GT_PRESENT
from hkd.models.squeezeunet import SQUEEZEUNET_PRESETS

MODEL_KEYS = ["method", "width"]
RUN_KEYS = ["model", "method", "width", "params", "seed", "status"]
EVAL_REQUIRED = ["model", "method", "width", "seed", "metric", "value"]  # columns of hkd evaluate the tables use


def read_evals(paths) -> pd.DataFrame:
    """The evaluation CSVs written by ``hkd evaluate``, each checked to have its columns and a row."""
    from hkd.errors import DataError

    frames = []
    for path in paths:
        try:
            df = pd.read_csv(path, dtype={"case": str, "width": str})
        except (OSError, ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors are ValueErrors
            raise DataError(f"{path}: not a readable evaluation CSV ({' '.join(str(exc).split())})") from None
        missing = [c for c in EVAL_REQUIRED if c not in df.columns]
        if missing:
            raise DataError(f"{path}: not an evaluation CSV of hkd evaluate (no column(s) {missing})")
        if df.empty:
            raise DataError(f"{path}: evaluation CSV without rows (only its header); rerun hkd evaluate for it")
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
SUMMARY_METRICS = ("dice", "iou", "voe", "rvd", "hd95_mm", "hd95_vox", "hd95_vox_transunet")
#: Per-case calibration metrics in the summary (mean over test cases per run), where the evaluations hold them.
CALIBRATION_SUMMARY = ("ece_region", "ece_region_ts", "brier_region", "temperature")
ORGAN_METRICS = ("dice", "voe", "rvd", "hd95_mm")
_OVERLAP = ("dice", "iou", "voe", "rvd")
_DISTANCE = ("hd95_mm", "hd95_vox")


def width_columns(width: str) -> dict:
    """``preset`` and ``multiplier`` of a configured width (``"0.4M"``, ``"1.5"``), of a student label of
    ``students.models`` (``"basicunet"``: the label, no multiplier) or of ``"teacher"``."""
    width = str(width)
    if width in SQUEEZEUNET_PRESETS:
        return {"preset": width, "multiplier": SQUEEZEUNET_PRESETS[width]}
    try:
        return {"preset": "", "multiplier": float(width)}
    except ValueError:  # the teacher, or a student by label: no width multiplier
        return {"preset": "" if width == "teacher" else width, "multiplier": float("nan")}


def _converged(value) -> bool | None:
    """True/False as written to an evaluation CSV (and read back), None when unknown."""
    text = str(value).strip().lower()
    return True if text == "true" else False if text == "false" else None


def run_info(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run (method, width, seed): ``status``, ``converged`` (True, False or None: unknown),
    ``convergence`` (the reason, "" when unknown) and ``gradient_flags`` (a list, empty when none).

    Evaluation tables written before these columns existed give unknown convergence and no flags.
    """
    runs = evals.drop_duplicates(["method", "width", "seed"]).reset_index(drop=True)
    out = runs[["method", "width", "seed", "status"]].copy()

    def column(name: str) -> pd.Series:
        return runs[name] if name in runs else pd.Series([None] * len(runs))

    out["converged"] = [_converged(v) for v in column("converged")]
    out["convergence"] = ["" if pd.isna(v) else str(v) for v in column("convergence")]
    out["stalled"] = [_converged(v) for v in column("stalled")]
    out["gradient_flags"] = [[] if pd.isna(v) or not str(v).strip() else str(v).split("; ")
                             for v in column("gradient_flags")]
    return out


def converged_count(info: pd.DataFrame, column: str = "converged") -> str:
    """``"2/3"`` converged runs (or ``column``: stalled ones) out of those known, ``" (1 unknown)"`` added;
    ``"n/a"`` when none is known."""
    known = [bool(v) for v in info[column] if v is not None and not pd.isna(v)]
    unknown = len(info) - len(known)
    if not known:
        return "n/a"
    return f"{sum(known)}/{len(known)}" + (f" ({unknown} unknown)" if unknown else "")


def _pair_values(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run, case and organ with the metrics under each table's convention."""
    evals = evals[evals["organ"] != CASE_ROW]
    wide = evals.pivot_table(index=RUN_KEYS + ["case", "organ", "empty"], columns="metric",
                             values="value").reset_index()
    present = wide["empty"].isin(GT_PRESENT)
    found = wide["empty"] == "neither"
    out = wide[RUN_KEYS + ["case", "organ", "empty"]].copy()
    for m in _OVERLAP:  # an evaluation table without VOE or RVD leaves them empty
        out[m] = wide[m].where(present) if m in wide else float("nan")
    for m in _DISTANCE:
        out[m] = wide[m].where(found)
    out["hd95_vox_transunet"] = wide["hd95_vox"]
    out["gt_pair"] = present
    out["empty_pred"] = wide["empty"] == "pred_empty"
    return out


def run_means(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run: each metric averaged per organ over cases, then over organs.

    Also ``empty_pred`` (pairs whose prediction misses an organ of the ground truth) and
    ``gt_pairs`` (pairs whose ground truth holds the organ).
    """
    pairs = _pair_values(evals)
    metrics = list(SUMMARY_METRICS)
    per_organ = pairs.groupby(RUN_KEYS + ["organ"], dropna=False)[metrics].mean().reset_index()
    out = per_organ.groupby(RUN_KEYS, dropna=False)[metrics].mean()
    counts = pairs.groupby(RUN_KEYS, dropna=False)[["empty_pred", "gt_pair"]].sum()
    out = out.join(counts.rename(columns={"gt_pair": "gt_pairs"}).astype(int))
    case_rows = evals[(evals["organ"] == CASE_ROW) & evals["metric"].isin(CALIBRATION_SUMMARY)]
    if len(case_rows):
        out = out.join(case_rows.pivot_table(index=RUN_KEYS, columns="metric", values="value", aggfunc="mean"))
    return out.reset_index()


def reliability_table(evals: pd.DataFrame) -> pd.DataFrame:
    """Per model and confidence bin, pooled over its runs and test cases (the pixels around the organs, before
    temperature scaling): pixels, mean confidence and accuracy. Empty without calibration rows."""
    rows = evals[(evals["organ"] == CASE_ROW) & evals["metric"].str.startswith("reliability_")]
    if rows.empty:
        return pd.DataFrame(columns=MODEL_KEYS + ["bin", "pixels", "confidence", "accuracy"])
    parts = rows["metric"].str.split("_", expand=True)
    sums = (rows.assign(bin=parts[1].astype(int), what=parts[2])
            .pivot_table(index=MODEL_KEYS + ["bin"], columns="what", values="value", aggfunc="sum", sort=False)
            .reset_index())
    filled = sums["count"] > 0
    sums["confidence"] = (sums["confidence"] / sums["count"]).where(filled)
    sums["accuracy"] = (sums["correct"] / sums["count"]).where(filled)
    out = sums.rename(columns={"count": "pixels"})[MODEL_KEYS + ["bin", "pixels", "confidence", "accuracy"]]
    return out.astype({"pixels": int})


def _per_run(values: pd.Series) -> str:
    """Per-run counts in seed order, e.g. ``"0, 2, 0"``."""
    return ", ".join(str(int(v)) for v in values)


def _mean_std(values: pd.Series) -> tuple[float, float]:
    std = values.std(ddof=1) if values.notna().sum() > 1 else float("nan")
    return values.mean(), std


def summary_table(evals: pd.DataFrame, external: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model: width, seeds, diverged, converged and gradient-flagged runs, mean/std over seeds of each
    metric, empty predictions, the calibration around the organs; given the ``external`` cohort's evaluations
    of the same runs, their Dice there (``dice_external``) and the drop from the study's test cases
    (``dice_drop``, internal minus external, per run)."""
    runs = run_means(evals).sort_values("seed", kind="stable")
    if external is not None:
        outside = run_means(external)[RUN_KEYS + ["dice"]].rename(columns={"dice": "dice_external"})
        runs = runs.merge(outside, on=RUN_KEYS, how="left")
        runs["dice_drop"] = runs["dice"] - runs["dice_external"]
    info = run_info(evals)
    rows = []
    for (method, width), g in runs.groupby(MODEL_KEYS, sort=False):
        at = info[(info["method"] == method) & (info["width"] == width)]
        row = {"method": method, **width_columns(width), "params": int(g["params"].iloc[0]), "seeds": len(g),
               "diverged": int((g["status"] == "diverged").sum()), "converged": converged_count(at),
               "stalled": converged_count(at, "stalled"),
               "gradient_flagged": f"{int(at['gradient_flags'].map(bool).sum())}/{len(at)}"}
        for m in SUMMARY_METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(g[m])
            if m == "hd95_vox":
                row["empty_pred"] = _per_run(g["empty_pred"])
                row["gt_pairs"] = _per_run(g["gt_pairs"].drop_duplicates())
        for m in CALIBRATION_SUMMARY + ("dice_external", "dice_drop"):
            if m in g:
                row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(g[m])
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["params", "method"], kind="stable").reset_index(drop=True)


def organ_table(evals: pd.DataFrame) -> pd.DataFrame:
    """Per model and organ: mean/std over seeds of the per-run organ mean (over cases) of Dice, VOE, RVD
    and HD95 in mm, and the empty predictions per run out of the cases holding the organ."""
    pairs = _pair_values(evals)
    per_run = (pairs.groupby(RUN_KEYS + ["organ"], dropna=False, sort=False)
               .agg(**{m: (m, "mean") for m in ORGAN_METRICS}, empty_pred=("empty_pred", "sum"),
                    gt_cases=("gt_pair", "sum"))
               .reset_index().sort_values("seed", kind="stable"))
    rows = []
    for (method, width, organ), g in per_run.groupby(MODEL_KEYS + ["organ"], sort=False):
        row = {"method": method, **width_columns(width), "params": int(g["params"].iloc[0]), "organ": organ,
               "seeds": len(g)}
        for m in ORGAN_METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(g[m])
        row["empty_pred"] = _per_run(g["empty_pred"])
        row["gt_cases"] = _per_run(g["gt_cases"].drop_duplicates())
        rows.append(row)
    return pd.DataFrame(rows)


def format_p(p: float) -> str:
    """A p-value as printed: three decimals, ``<0.001`` below that, ``n/a`` when undefined."""
    if pd.isna(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def display(df: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table as text: floats to ``digits``, p-values (raw and Holm-adjusted) by :func:`format_p`, undefined values ``n/a``."""
    shown = df.copy()
    for col in shown.columns:
        if col in ("p_value", "p_holm"):
            shown[col] = shown[col].map(format_p)
        elif col == "multiplier":  # as configured: 1.5, not 1.500
            shown[col] = shown[col].map(lambda v: "n/a" if pd.isna(v) else f"{v:g}")
        elif pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "n/a" if pd.isna(v) else f"{v:.{digits}f}")
        else:
            shown[col] = shown[col].map(lambda v: "n/a" if v is None or v is pd.NA or v != v else str(v))
    return shown


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table, as :func:`display` prints it."""
    # every cell is text: tabulate must not parse widths such as "0.25" as numbers
    return display(df, digits).to_markdown(index=False, disable_numparse=True) + "\n"


def to_html(df: pd.DataFrame, title: str, digits: int = 3, notes: str = "") -> str:
    """A standalone HTML page holding the table (the report shows it in a frame).

    The table scrolls sideways inside the page rather than being cut at the frame's width.
    ``notes`` is shown under the table as preformatted text (escaped).
    """
    table = display(df, digits).to_html(index=False, border=0, classes="hkd-table")
    style = ("body{font-family:sans-serif;font-size:13px;margin:12px}"
             ".scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse}"
             "th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}"
             "th{background:#f3f3f3}p.notes{white-space:pre-wrap;max-width:60em}"
             "td:first-child,th:first-child{text-align:left;position:sticky;left:0;background:#fff}"
             "th:first-child{background:#f3f3f3}")
    notes_html = f"<p class='notes'>{html.escape(notes)}</p>" if notes else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h3>{html.escape(title)}</h3>"
            f"<div class='scroll'>{table}</div>{notes_html}</body></html>\n")
