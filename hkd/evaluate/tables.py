"""Study tables: per model (method x width) mean and std over seeds, overall and per organ."""

from __future__ import annotations

import pandas as pd

MODEL_KEYS = ["method", "width"]
RUN_KEYS = ["model", "method", "width", "params", "seed", "status"]
SUMMARY_METRICS = ("dice", "iou", "hd95_mm", "hd95_vox")


def run_means(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run: each metric averaged over cases and organs (TransUNet's mean)."""
    wide = evals.pivot_table(index=RUN_KEYS + ["case", "organ"], columns="metric", values="value").reset_index()
    per_organ = wide.groupby(RUN_KEYS + ["organ"], dropna=False)[list(SUMMARY_METRICS)].mean().reset_index()
    return per_organ.groupby(RUN_KEYS, dropna=False)[list(SUMMARY_METRICS)].mean().reset_index()


def summary_table(evals: pd.DataFrame) -> pd.DataFrame:
    """Per model: params, seeds, diverged runs, and mean/std over seeds of each metric."""
    runs = run_means(evals)
    rows = []
    for (method, width), g in runs.groupby(MODEL_KEYS, sort=False):
        row = {"method": method, "width": width, "params": int(g["params"].iloc[0]), "seeds": len(g),
               "diverged": int((g["status"] == "diverged").sum())}
        for m in SUMMARY_METRICS:
            row[f"{m}_mean"] = g[m].mean()
            row[f"{m}_std"] = g[m].std(ddof=1) if len(g) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["params", "method"], kind="stable").reset_index(drop=True)


def organ_table(evals: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """Per model and organ: mean/std over seeds of the per-run organ mean (over cases)."""
    sub = evals[evals["metric"] == metric]
    per_run = sub.groupby(RUN_KEYS + ["organ"], dropna=False)["value"].mean().reset_index()
    out = per_run.groupby(MODEL_KEYS + ["organ"], sort=False)["value"].agg(["mean", "std"]).reset_index()
    return out.rename(columns={"mean": f"{metric}_mean", "std": f"{metric}_std"})


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table with floats rounded to ``digits``."""
    shown = df.copy()
    for col in shown.columns:  # round floats here: tabulate must not parse widths such as "0.25" as numbers
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    return shown.to_markdown(index=False, disable_numparse=True) + "\n"


def to_html(df: pd.DataFrame, title: str, digits: int = 3) -> str:
    """A standalone HTML page holding the table (for the report, which renders HTML inline)."""
    table = df.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", na_rep="", border=0,
                       classes="hkd-table")
    style = ("body{font-family:sans-serif;font-size:13px;margin:12px}table{border-collapse:collapse}"
             "th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}th{background:#f3f3f3}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body><h3>{title}</h3>{table}</body></html>\n")
