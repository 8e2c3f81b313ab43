"""Hypothesis verdicts: every distillation method against scratch training at the same width.

The unit of pairing is a (test case, organ) pair whose ground truth contains the organ: for each
pair, the method's Dice averaged over its seeds minus the scratch student's Dice averaged over its
seeds. The mean difference gets a 95% percentile-bootstrap CI and a two-sided Wilcoxon signed-rank
p-value, and a verdict from :func:`hkd.evaluate.stats.verdict`. The study's "more global context"
claim is tested the same way on Grad-CAM attribution mass outside the dilated organ mask.
"""

from __future__ import annotations

import pandas as pd

from hkd.evaluate.stats import paired_bootstrap_ci, verdict, wilcoxon_p

CLAIMS = {
    "logits": "H1: logits matching (KL) beats scratch",
    "latent": "H2: latent matching (L1) beats scratch",
    "hlfd": "HLFD beats scratch",
}
COLUMNS = ["claim", "method", "width", "quantity", "n_pairs", "mean_diff", "ci_low", "ci_high", "p_value",
           "verdict", "diverged_runs"]


def _seed_mean(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    return df.groupby(keys)["value"].mean()


def _test(diffs: pd.Series, seed: int) -> dict:
    d = diffs.dropna().to_numpy()
    mean, low, high = paired_bootstrap_ci(d, seed=seed)
    p = wilcoxon_p(d)
    return {"n_pairs": len(d), "mean_diff": mean, "ci_low": low, "ci_high": high, "p_value": p,
            "verdict": verdict(mean, low, high, p)}


def dice_claims(evals: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per (method, width) with a scratch counterpart: the paired Dice difference."""
    dice = evals[(evals["metric"] == "dice") & evals["empty"].isin(["neither", "pred_empty"])]
    rows = []
    for width in dice["width"].drop_duplicates():
        at_width = dice[dice["width"] == width]
        scratch = at_width[at_width["method"] == "scratch"]
        if scratch.empty:
            continue
        base = _seed_mean(scratch, ["case", "organ"])
        for method in at_width["method"].drop_duplicates():
            if method == "scratch":
                continue
            runs = evals[(evals["method"] == method) & (evals["width"] == width)]
            diverged = runs.drop_duplicates("seed")["status"].eq("diverged").sum()
            n_seeds = runs["seed"].nunique()
            diffs = _seed_mean(at_width[at_width["method"] == method], ["case", "organ"]) - base
            rows.append({"claim": CLAIMS.get(method, f"{method} beats scratch"), "method": method,
                         "width": width, "quantity": "test Dice (method - scratch)", **_test(diffs, seed),
                         "diverged_runs": f"{diverged}/{n_seeds}"})
    return pd.DataFrame(rows, columns=COLUMNS)


def context_claims(context: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Distilled vs scratch Grad-CAM mass outside the dilated organ (positive: more global context).

    ``context`` has columns method, width, case, slice, organ, outside_mass.
    """
    rows = []
    for width in context["width"].drop_duplicates():
        at_width = context[context["width"] == width]
        scratch = at_width[at_width["method"] == "scratch"]
        if scratch.empty:
            continue
        base = scratch.groupby(["case", "slice", "organ"])["outside_mass"].mean()
        for method in at_width["method"].drop_duplicates():
            if method == "scratch":
                continue
            sub = at_width[at_width["method"] == method]
            diffs = sub.groupby(["case", "slice", "organ"])["outside_mass"].mean() - base
            rows.append({"claim": f"{method} student uses more global context than scratch", "method": method,
                         "width": width, "quantity": "Grad-CAM mass outside dilated organ (method - scratch)",
                         **_test(diffs, seed), "diverged_runs": ""})
    return pd.DataFrame(rows, columns=COLUMNS)
