"""Hypothesis verdicts: every distillation method against scratch training at the same width, and
(``compare_students``) which of two students gains more from each method over its own scratch run.

The claims are contrasts of models (:mod:`hkd.evaluate.contrasts`): ``method - scratch``, or for two
students ``a`` and ``b`` the gain gap ``(a's method - a's scratch) - (b's method - b's scratch)``.

The statistical unit is the patient (case). For each run and case, the quantity is averaged over
what belongs to that case: the organs its ground truth holds (Dice claims, test cases), or its
sampled slices and their organs (the Grad-CAM "global context" claim, validation cases). The
case-level difference is the method's value averaged over its seeds minus the scratch student's
value averaged over its seeds (for a gain gap, the signed sum of its four models' seed-averaged values).
On these differences:

- the CI of their mean comes from :func:`~hkd.evaluate.stats.crossed_bootstrap_ci`, a hierarchical
  bootstrap that resamples cases (organs and slices stay with their case) and each arm's seeds
  (one seed draw shared by all cases, since a seed is one trained network);
- ``p_value`` is a one-sided Wilcoxon signed-rank test over the cases (exact at these sizes),
  since every claim says the method does better than scratch: a difference the other way is
  no evidence for the claim, and the verdict calls a CI at or below 0 "not supported" whatever its p;
- the claims of one verdict table are one family (every row: Dice and Grad-CAM context, every
  method and width), and ``p_holm`` is ``p_value`` adjusted by Holm's step-down method over that
  family (:func:`~hkd.evaluate.stats.holm`), which keeps the chance of any false "supported" in the
  table at alpha;
- ``mde``, the smallest difference the verdict could detect at this ``n``, is the larger of what
  the one-sided exact Wilcoxon test on ``n`` cases detects with power 0.8
  (:func:`~hkd.evaluate.stats.min_detectable_effect`: its power under normal differences with the
  case-level sd, by seeded simulation) and what the CI excludes 0 for
  (:func:`~hkd.evaluate.stats.ci_detectable_effect`, from its width, which holds the seeds' spread),
  since "supported" needs both. The test's level is alpha / m for a family of m claims, the level of
  Holm's first step: a claim whose p reaches it is supported by Holm whatever the other claims show
  (later steps are looser only once claims with smaller p are supported), so ``mde`` is what a claim
  detects on its own; it is ``inf`` when n cases cannot reach that level at all (p >= 2^-n);
- the verdict is :func:`~hkd.evaluate.stats.verdict` on ``p_holm``; ``margin``
  (:func:`~hkd.evaluate.stats.verdict_margin`) is how far its CI would have to move, in half-widths of that
  CI, for the verdict to change, and ``fragile`` marks a margin below
  :data:`~hkd.evaluate.stats.FRAGILE_MARGIN` (a verdict a rerun on another CPU or seed set may not repeat);
- ``note`` says when the verdict rests
  on fewer than :data:`MIN_SEEDS` seeds per arm, on too few cases for the corrected alpha, on diverged
  runs, on runs that did not converge (the method's or scratch's, :mod:`hkd.train.convergence`), or on
  runs where a distillation term dominated a block of the student after the warm-up
  (:mod:`hkd.train.gradient_balance`).

Beside every comparison stand the teacher's, the scratch student's and the method's value of the
quantity on the same cases (teacher: its one seed; ``nan`` when it has none, e.g. no Grad-CAM).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from hkd.evaluate.contrasts import (
    Contrast,
    chain_contrasts,
    gain_gap_contrasts,
    scratch_contrasts,
)
from hkd.evaluate.metrics import CASE_ROW, GT_PRESENT
from hkd.evaluate.stats import (
    FRAGILE_MARGIN,
    ci_detectable_effect,
    cohort_shift_bootstrap_ci,
    contrast_bootstrap_ci,
    holm,
    mann_whitney_p,
    min_detectable_effect,
    verdict,
    verdict_margin,
    wilcoxon_p,
)
from hkd.evaluate.tables import run_info, to_markdown, width_columns
from hkd.train.gradient_balance import parse_flag

CLAIMS = {
    "logits": "H1: logits matching (KL) beats scratch",
    "latent": "H2: latent matching (L1) beats scratch",
    "hlfd": "HLFD beats scratch",
}
#: Seeds per arm below which a verdict is flagged: two runs say little about run-to-run spread.
MIN_SEEDS = 3
ALPHA, POWER, CI = 0.05, 0.8, 0.95
#: The verdict table's families, each its own Holm adjustment: the study's hypotheses (Dice, context, chains,
#: gain gaps), and what distillation is said to give beyond Dice (calibration around the organs).
HYPOTHESES, BEYOND_DICE = "hypotheses", "beyond Dice"
#: The calibration claims: per-case metric of hkd evaluate -> what it is, in words.
CALIBRATION_CLAIMS = {"ece_region": "ECE around the organs",
                      "ece_region_ts": "ECE around the organs after temperature scaling"}
COLUMNS = ["family", "claim", "verdict", "margin", "fragile", "method", "preset", "multiplier", "params", "unit", "n",
           "seeds", "mean_diff", "ci_low", "ci_high", "p_value", "p_holm", "mde", "teacher_mean", "scratch_mean",
           "method_mean", "note", "quantity", "diverged_runs", "unconverged_runs", "gradient_flagged_runs"]


def case_values(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per run (method, width, seed) and case: ``value`` averaged over the case's rows."""
    return df.groupby(["method", "width", "seed", "case"], sort=False)[value].mean().reset_index()


def _matrix(values: pd.DataFrame, method: str, width, value: str, strict: bool = True) -> pd.DataFrame:
    """(case x seed) values of one model; with ``strict``, every seed must cover the same cases."""
    sub = values[(values["method"] == method) & (values["width"] == width)]
    mat = sub.pivot(index="case", columns="seed", values=value).sort_index()
    missing = mat.isna()
    if strict and missing.any().any():
        seed = missing.any().idxmax()
        cases = mat.index[missing[seed]].tolist()
        raise ValueError(f"{method} at width {width}, seed {seed}: no values for cases {cases}")
    return mat


def _compare(mats: list[pd.DataFrame], weights: list[int], seed: int, n_boot: int) -> dict:
    """The contrast ``sum(w * arm)`` over the cases every arm has a value for, each arm's seeds averaged."""
    shared = functools.reduce(lambda a, b: a.union(b), (m.index for m in mats))
    cases = functools.reduce(lambda a, b: a.intersection(b), (m.index for m in mats))
    complete = np.logical_and.reduce([m.loc[cases].notna().all(axis=1).to_numpy() for m in mats])
    cases = cases[complete]
    arrays = [m.loc[cases].to_numpy() for m in mats]
    diffs = sum(w * a.mean(axis=1) for w, a in zip(weights, arrays))
    mean, low, high = contrast_bootstrap_ci(arrays, weights, n_boot=n_boot, ci=CI, seed=seed)
    return {"n": len(cases), "seeds": " vs ".join(str(a.shape[1]) for a in arrays), "mean_diff": mean,
            "ci_low": low, "ci_high": high, "p_value": wilcoxon_p(diffs, alternative="greater"), "_diffs": diffs,
            "cases": cases, "_arm_means": [float(a.mean()) for a in arrays],
            "min_seeds": min(a.shape[1] for a in arrays), "left_out": len(shared) - len(cases)}


def _unconverged(info: pd.DataFrame) -> tuple[int, int, dict[str, int]]:
    """Runs that did not converge, runs whose convergence is known, and the kinds of reason
    (``plateau``, ``still rising``, ...) with their counts."""
    known = info[info["converged"].map(lambda v: v is not None and not pd.isna(v))]
    failed = known[~known["converged"].astype(bool)]
    kinds = failed["convergence"].map(lambda r: r.split(" (")[0].split(":")[0] or "unknown reason")
    return len(failed), len(known), kinds.value_counts(sort=False).to_dict()


def _convergence_note(runs: list[tuple[str, pd.DataFrame]]) -> str:
    """Which arms (by role) hold runs that did not converge, out of those known, and why."""
    parts = []
    for who, info in runs:
        n_failed, n_known, kinds = _unconverged(info)
        if n_failed:
            why = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
            parts.append(f"{n_failed} of {who} {n_known} ({why})")
    return "rests on unconverged runs: " + ", ".join(parts) if parts else ""


def _stalled_note(runs: list[tuple[str, pd.DataFrame]]) -> str:
    """Which arms (by role) hold stalled runs (most organs at a validation Dice of 0.1 or less at the end)."""
    parts = []
    for who, info in runs:
        flags = [bool(v) for v in info["stalled"] if v is not None and not pd.isna(v)]
        if any(flags):
            parts.append(f"{sum(flags)} of {who} {len(flags)}")
    return "rests on stalled runs (most organs at validation Dice <= 0.1 at the end): " + ", ".join(parts) \
        if parts else ""


def _flag_note(distilled: list[tuple[str, pd.DataFrame]]) -> str:
    """Which blocks a distillation term dominated after the warm-up, in how many of each distilled arm's runs
    (the arm named when the claim has more than one)."""
    parts = []
    for who, info in distilled:
        seen: dict[tuple[str, str], list[float]] = {}
        for run_flags in info["gradient_flags"]:
            for flag in run_flags:
                term, block, ratio = parse_flag(flag)
                seen.setdefault((term, block), []).append(ratio)
        prefix = f"{who}: " if len(distilled) > 1 else ""
        parts += [f"{prefix}{term} in block {block} up to {max(r):.3g}x in {len(r)} of {len(info)} runs"
                  for (term, block), r in seen.items()]
    if not parts:
        return ""
    return "a distillation term above 10x the segmentation gradient after the warm-up: " + ", ".join(parts)


def _note(result: dict, diverged: list[tuple[str, int]], runs: list[tuple[str, pd.DataFrame]] | None,
          distilled: list[tuple[str, pd.DataFrame]] | None, gains: list[str]) -> str:
    notes = []
    if result["min_seeds"] == 1:
        notes.append(f"rests on fewer than {MIN_SEEDS} seeds ({result['seeds']}): one seed measures no "
                     "run-to-run spread, the CI covers the cases only")
    elif result["min_seeds"] < MIN_SEEDS:
        notes.append(f"rests on fewer than {MIN_SEEDS} seeds ({result['seeds']}): run-to-run spread barely measured")
    notes += [f"{n} of {who} runs diverged" for who, n in diverged if n]
    if runs is not None:
        notes += [n for n in (_stalled_note(runs), _convergence_note(runs), _flag_note(distilled)) if n]
    if result["left_out"]:
        notes.append(f"{result['left_out']} case(s) left out: a run has no value there (no Grad-CAM mass where "
                     "it predicts none of the case's sampled organs)")
    if gains:
        notes.append(", ".join(gains))
    return "; ".join(notes)


def _run_counts(runs: list[tuple[str, pd.DataFrame]] | None, distilled: list[tuple[str, pd.DataFrame]]) -> dict:
    """``unconverged_runs`` (per arm, out of those known, `` vs ``-joined) and ``gradient_flagged_runs`` (per
    distilled arm); empty without run information or when no run's convergence is known."""
    if runs is None:
        return {"unconverged_runs": "", "gradient_flagged_runs": ""}
    counts = [_unconverged(info)[:2] for _, info in runs]
    return {"unconverged_runs": " vs ".join(f"{bad}/{known}" for bad, known in counts)
            if any(known for _, known in counts) else "",
            "gradient_flagged_runs": " vs ".join(f"{int(info['gradient_flags'].map(bool).sum())}/{len(info)}"
                                                 for _, info in distilled)}


def _claims(values: pd.DataFrame, value: str, contrasts: list[Contrast], *, quantity: str, unit: str, seed: int,
            n_boot: int, params: dict | None = None, diverged: dict | None = None, info: pd.DataFrame | None = None,
            strict: bool = True) -> pd.DataFrame:
    """One row per contrast, before the family-wise step (:func:`_decide`)."""
    teacher = values[values["method"] == "teacher"].groupby("case")[value].mean()
    rows = []
    for contrast in contrasts:
        mats = [_matrix(values, arm.method, arm.width, value, strict) for arm in contrast.arms]
        result = _compare(mats, [arm.weight for arm in contrast.arms], seed, n_boot)
        teacher_cases = teacher.reindex(result.pop("cases"))
        arm_means = result.pop("_arm_means")
        result["n"] = int(result["n"])
        distilled_arms = [arm for arm in contrast.arms if arm.method != "scratch"]
        n_diverged = [(arm.role, *(diverged or {}).get((arm.method, arm.width), (0, None))) for arm in distilled_arms]
        runs = distilled = None
        if info is not None:
            runs = [(arm.role, info[(info["method"] == arm.method) & (info["width"] == arm.width)])
                    for arm in contrast.arms]
            distilled = [run for run, arm in zip(runs, contrast.arms) if arm.method != "scratch"]
        gains = [f"{name} {arm_means[i] - arm_means[j]:+.3f}" for name, i, j in contrast.gains]
        first = contrast.arms[0]
        rows.append({"claim": contrast.claim, "method": contrast.method, **width_columns(contrast.student),
                     "params": (params or {}).get((first.method, first.width), np.nan)
                     if contrast.single_student else np.nan,
                     "quantity": f"{quantity} ({contrast.difference})", "unit": unit, **result,
                     **{column: arm_means[i] for column, i in contrast.means.items()},
                     "teacher_mean": teacher_cases.mean() if teacher_cases.notna().all() else np.nan,
                     "diverged_runs": "" if any(n is None for *_, n in n_diverged)
                     else " vs ".join(f"{d}/{n}" for _, d, n in n_diverged),
                     **_run_counts(runs, distilled or []),
                     "note": _note(result, [(who, d) for who, d, _ in n_diverged], runs, distilled, gains)})
    table = pd.DataFrame(rows, columns=COLUMNS + ["_diffs"])
    return table.astype({"params": "Int64", "n": int})


def _decide(table: pd.DataFrame) -> pd.DataFrame:
    """The family-wise step, with every row of ``table`` (from ``decide=False``) one claim of one family:
    ``p_holm``, ``mde`` at the level of Holm's first step (alpha / m), the verdict on ``p_holm``, its
    ``margin`` and whether it is ``fragile``, and a note where the cases cannot reach that level."""
    table = table.copy()
    table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float))
    m = max(int(table["p_value"].notna().sum()), 1)
    level = ALPHA / m
    corrected = f"{ALPHA} / {m} = {level:.2g} ({m} claims, Holm)" if m > 1 else f"{ALPHA}"
    mde, verdicts, margins, notes = [], [], [], []
    for row in table.to_dict("records"):
        # a claim across two cohorts (its p from Mann-Whitney) has no paired differences: its CI alone bounds it
        wilcoxon_mde = 0.0 if row["_diffs"] is None else min_detectable_effect(row["_diffs"], alpha=level, power=POWER)
        mde.append(max(wilcoxon_mde, ci_detectable_effect(row["ci_low"], row["ci_high"], alpha=1.0 - CI, power=POWER)))
        verdicts.append(verdict(row["mean_diff"], row["ci_low"], row["ci_high"], row["p_holm"], alpha=ALPHA))
        margins.append(verdict_margin(verdicts[-1], row["ci_low"], row["ci_high"],
                                      can_support=not np.isinf(wilcoxon_mde)))
        too_few = (f"n too small for the corrected alpha: {row['n']} cases give p >= {2.0 ** -row['n']:.3g}, "
                   f"not below {corrected}") if np.isinf(wilcoxon_mde) else ""
        notes.append("; ".join(filter(None, [row["note"], too_few])))
    table["mde"], table["verdict"], table["note"] = mde, verdicts, notes
    table["margin"] = margins
    table["fragile"] = [bool(v < FRAGILE_MARGIN) for v in margins]  # NaN (no CI): not fragile
    return table.drop(columns="_diffs")


def _dice_values(evals: pd.DataFrame) -> pd.DataFrame:
    """Per run and test case: the run's Dice over the organs the case's ground truth holds."""
    return case_values(evals[(evals["metric"] == "dice") & evals["empty"].isin(GT_PRESENT)], "value")


def dice_claims(evals: pd.DataFrame, seed: int = 0, n_boot: int = 10000, decide: bool = True,
                compare_students: Sequence[Sequence[str]] = ()) -> pd.DataFrame:
    """One row per (method, width) with a scratch counterpart: the case-level Dice difference; then, per pair
    ``(a, b)`` of ``compare_students``, per method both trained: ``a``'s Dice gain over its scratch run minus
    ``b``'s (:func:`~hkd.evaluate.contrasts.gain_gap_contrasts`).

    A case's Dice is the run's mean over the organs its ground truth holds (a missed organ
    counts 0). With ``decide``, its rows are one family (see :func:`_decide`); without, the rows wait for
    it (see :func:`study_claims`).
    """
    values = _dice_values(evals)
    runs = evals.drop_duplicates(["method", "width", "seed"])
    params = runs.groupby(["method", "width"])["params"].first().astype(int).to_dict()
    diverged = {k: (int(g["status"].eq("diverged").sum()), len(g)) for k, g in runs.groupby(["method", "width"])}
    contrasts = scratch_contrasts(values, lambda m: CLAIMS.get(m, f"{m} beats scratch"))
    contrasts += chain_contrasts(values)
    for first, second in compare_students:
        contrasts += gain_gap_contrasts(values, str(first), str(second))
    table = _claims(values, "value", contrasts, quantity="test Dice", unit="test case", seed=seed, n_boot=n_boot,
                    params=params, diverged=diverged, info=run_info(evals))
    return _decide(table) if decide else table


def context_claims(context: pd.DataFrame, seed: int = 0, n_boot: int = 10000, decide: bool = True,
                   info: pd.DataFrame | None = None) -> pd.DataFrame:
    """Distilled vs scratch Grad-CAM mass outside the dilated organ (positive: more global context).

    ``context`` has columns method, width, seed, case, slice, organ, outside_mass; a case's value
    is the run's mean over its sampled slices and their organs. A run that predicts none of a case's
    sampled organs has no Grad-CAM value there: such a case is left out of the claim (the note says how
    many), since a missing attribution is neither more nor less context. ``decide`` as in :func:`dice_claims`.
    """
    values = case_values(context, "outside_mass")
    contrasts = scratch_contrasts(values, lambda m: f"{m} student uses more global context than scratch")
    table = _claims(values, "outside_mass", contrasts, quantity="Grad-CAM mass outside dilated organ",
                    unit="validation case", seed=seed, n_boot=n_boot, strict=False, info=info)
    return _decide(table) if decide else table


def calibration_claims(evals: pd.DataFrame, seed: int = 0, n_boot: int = 10000, decide: bool = True) -> pd.DataFrame:
    """Per method and student with a scratch counterpart: the method's student is better calibrated than scratch's,
    by the case's ECE around the organs, before and after each model's own temperature scaling (the fair
    baseline: a scratch student with a fitted temperature). The difference is ``scratch - method`` (positive:
    the method's ECE is lower). Without calibration rows in ``evals`` (older evaluations), no rows."""
    info = run_info(evals)
    params = evals.drop_duplicates(["method", "width"]).set_index(["method", "width"])["params"].to_dict()
    tables = []
    for metric, words in CALIBRATION_CLAIMS.items():
        values = case_values(evals[(evals["organ"] == CASE_ROW) & (evals["metric"] == metric)], "value")
        if values.empty:
            continue
        contrasts = scratch_contrasts(values, lambda m, w=words: f"{m} better calibrated than scratch ({w})",
                                      lower_is_better=True)
        tables.append(_claims(values, "value", contrasts, quantity=f"test {words}", unit="test case", seed=seed,
                              n_boot=n_boot, params=params, info=info))
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(tables, ignore_index=True)
    return _decide(table) if decide else table


def shift_claims(evals: pd.DataFrame, external: pd.DataFrame, seed: int = 0, n_boot: int = 10000,
                 decide: bool = True) -> pd.DataFrame:
    """Per method and student with a scratch counterpart on both cohorts: the method's student loses less Dice
    than scratch's from the study's test cases (``evals``) to the external cohort's (``external``, data.external).

    The difference is the method's Dice advantage over scratch on the external cases minus on the internal ones
    (each a mean over cases of seed-averaged Dice): ``(method - scratch) external - (method - scratch) internal``,
    positive when the method keeps more of its Dice under the shift. The cohorts are different patients: the
    CI resamples each cohort's cases apart and each model's seeds once for both
    (:func:`~hkd.evaluate.stats.cohort_shift_bootstrap_ci`); ``p_value`` is a one-sided Mann-Whitney U test of
    the external cases' method-minus-scratch differences against the internal cases'; ``n`` counts both."""
    inside, outside = _dice_values(evals), _dice_values(external)
    info = run_info(evals)
    params = evals.drop_duplicates(["method", "width"]).set_index(["method", "width"])["params"].to_dict()
    rows = []
    for contrast in scratch_contrasts(inside, lambda m: f"{m} loses less Dice than scratch under the scanner shift"):
        arms = [(arm.method, arm.width) for arm in contrast.arms]
        if not all(((outside["method"] == m) & (outside["width"] == w)).any() for m, w in arms):
            continue
        mats_in = [_matrix(inside, m, w, "value") for m, w in arms]
        mats_out = [_matrix(outside, m, w, "value") for m, w in arms]
        weights = [arm.weight for arm in contrast.arms]
        mean, low, high = cohort_shift_bootstrap_ci([m.to_numpy() for m in mats_in], [m.to_numpy() for m in mats_out],
                                                    weights, n_boot=n_boot, ci=CI, seed=seed)
        d_in = sum(w * m.mean(axis=1) for w, m in zip(weights, mats_in))
        d_out = sum(w * m.mean(axis=1) for w, m in zip(weights, mats_out))
        runs = [(arm.role, info[(info["method"] == arm.method) & (info["width"] == arm.width)])
                for arm in contrast.arms]
        drops = [float(a.to_numpy().mean() - b.to_numpy().mean()) for a, b in zip(mats_in, mats_out)]
        result = {"n": len(d_in) + len(d_out), "min_seeds": min(m.shape[1] for m in mats_in),
                  "seeds": " vs ".join(str(m.shape[1]) for m in mats_in), "left_out": 0}
        rows.append({"claim": contrast.claim, "method": contrast.method, **width_columns(contrast.student),
                     "params": params.get(arms[0], np.nan), "unit": "test case (internal + external)",
                     "quantity": "test Dice, external minus internal ((method - scratch) external - (method - "
                                 "scratch) internal)",
                     "n": result["n"], "seeds": result["seeds"], "mean_diff": mean, "ci_low": low, "ci_high": high,
                     "p_value": mann_whitney_p(d_out.to_numpy(), d_in.to_numpy()), "_diffs": None,
                     "method_mean": float(mats_out[0].to_numpy().mean()),
                     "scratch_mean": float(mats_out[1].to_numpy().mean()),
                     "teacher_mean": float(outside.loc[outside["method"] == "teacher", "value"].mean()),
                     "diverged_runs": "", **_run_counts(runs, runs[:1]),
                     "note": _note(result, [], runs, runs[:1],
                                   [f"Dice drop internal to external: the method's {drops[0]:.3f}, scratch's "
                                    f"{drops[1]:.3f} (means are the external cohort's)"])})
    table = pd.DataFrame(rows, columns=COLUMNS + ["_diffs"]).astype({"params": "Int64"})
    return _decide(table) if decide and len(table) else table


def study_claims(evals: pd.DataFrame, context: pd.DataFrame | None = None, seed: int = 0,
                 n_boot: int = 10000, compare_students: Sequence[Sequence[str]] = (),
                 external: pd.DataFrame | None = None) -> pd.DataFrame:
    """The study's verdict table, two families each with its own Holm adjustment (``family``): the hypotheses
    (the Dice claims with ``compare_students``' gain gaps and, given ``context``, the context claims), then the
    claims beyond Dice (calibration, :func:`calibration_claims`, and, given the ``external`` cohort's evaluations,
    the scanner shift, :func:`shift_claims`)."""
    tables = [dice_claims(evals, seed=seed, n_boot=n_boot, decide=False, compare_students=compare_students)]
    if context is not None:
        tables.append(context_claims(context, seed=seed, n_boot=n_boot, decide=False, info=run_info(evals)))
    families = [_decide(pd.concat(tables, ignore_index=True)).assign(family=HYPOTHESES)]
    beyond = [calibration_claims(evals, seed=seed, n_boot=n_boot, decide=False)]
    if external is not None:
        beyond.append(shift_claims(evals, external, seed=seed, n_boot=n_boot, decide=False))
    beyond = [t for t in beyond if len(t)]
    if beyond:
        families.append(_decide(pd.concat(beyond, ignore_index=True)).assign(family=BEYOND_DICE))
    return pd.concat(families, ignore_index=True)[COLUMNS]


def report_markdown(table: pd.DataFrame, seed: int, n_boot: int = 10000) -> str:
    """``hypotheses.md``: what every column means, then the verdict table."""
    return ("# Hypothesis verdicts\n\n" + explanation(seed, n_boot) + "\n\n" + to_markdown(table))


def explanation(seed: int, n_boot: int = 10000, markdown: bool = True) -> str:
    """How the verdict table is computed (above it in Markdown; under it, without code marks, in HTML)."""
    text = (
        "The statistical unit is the patient: `n` counts the cases (`unit`), never (case, organ) pairs. "
        "A case's value is a run's mean over the organs its ground truth holds (Dice; a missed organ counts 0) "
        "or over its sampled slices and their organs (Grad-CAM context), averaged over the seeds; `seeds` gives "
        "the method's and the scratch student's seed counts. `mean_diff` is the mean over cases of "
        "method minus scratch at the same width; `teacher_mean`, `scratch_mean` and `method_mean` are the "
        "quantity itself on the same cases (the teacher has one seed; n/a where it has no value). A row whose "
        "student reads 'a vs b' (report.compare_students) claims that student a gains more from the method than "
        "student b, each over its own scratch run: its `mean_diff` is the mean over cases of (a's method - a's "
        "scratch) - (b's method - b's scratch), each model averaged over its seeds, its bootstrap resamples the "
        "cases and each of the four models' seeds, `seeds` lists their seed counts in that order, `note` gives "
        "each student's gain, and `params`, `scratch_mean` and `method_mean` are n/a.\n\n"
        f"`ci_low`/`ci_high`: {CI:.0%} percentile CI from a hierarchical bootstrap ({n_boot} replicates, seed "
        f"{seed}) that resamples the cases, keeping each case's organs or slices together, and each arm's seeds, "
        "one seed draw shared by all cases of a replicate. `p_value`: one-sided Wilcoxon signed-rank test "
        "(exact) on the n case-level differences, since every claim says the method does better than scratch. "
        "`p_holm`: `p_value` adjusted by Holm's step-down method over the claim's `family`, which keeps the "
        "chance of any false 'supported' in that family at alpha: the hypotheses (Dice, Grad-CAM context, chains, "
        "gain gaps) are one family; the claims beyond Dice (each method's student better calibrated than "
        "scratch's: the case's expected calibration error, 15 equal-width confidence bins, over the pixels within "
        "10 mm of a labelled or predicted organ, before and after each model's own temperature fitted on the "
        "validation cases; `mean_diff` is scratch minus method, so positive favours the method) are a second, at "
        "alpha "
        f"{ALPHA}. `mde`: the smallest true difference the verdict could detect (power {POWER}), the larger of "
        "two: what the one-sided exact Wilcoxon test on the n case-level differences detects (its power under "
        "normal differences with their sd, from 40,000 seeded samples), at alpha / m for m claims, the level at "
        "which Holm supports a claim whatever the others show (inf when n cases cannot reach it: their smallest "
        "p is 2^-n, 1/64 at 6 cases); and the difference whose CI of this width would exclude 0 (1.43 times its "
        "half-width; the width holds the seeds' spread, which the case-level sd does not).\n\n"
        f"Verdict: supported (CI above 0 and p_holm < {ALPHA}), not supported (CI at or below 0, however "
        f"significant a difference the other way), inconclusive (otherwise). `margin`: how far the CI would "
        "have to move for the verdict to change, in half-widths h = (ci_high - ci_low) / 2 of that CI: "
        "supported, ci_low / h; not supported, -ci_high / h; inconclusive with the CI across 0, the nearer "
        "end's distance from 0, min(-ci_low, ci_high) / h; inconclusive with the CI above 0, 0 (p_holm alone "
        "holds it back, a boundary the CI does not measure); where n is too small for the corrected alpha "
        "(nothing can be supported), an inconclusive verdict's margin is ci_high / h. `fragile`: margin below "
        f"{FRAGILE_MARGIN}, i.e. the deciding CI end lies within about one standard error (h / 1.96) of 0, a "
        "shift that retraining on another CPU or with other seeds can make: such a verdict may not repeat. "
        f"The margin measures the CI only: supported also needs p_holm < {ALPHA}. `note` flags verdicts resting on "
        f"fewer than {MIN_SEEDS} seeds per arm, n too small for the corrected alpha, "
        "diverged runs (evaluated from their last finite checkpoint; `diverged_runs` counts them), stalled runs "
        "(at least half the organs at a validation Dice of 0.1 or less at the end), runs that did "
        "not converge (still rising, or on a plateau predicting few organs; `unconverged_runs`: the method's vs "
        "scratch's, out of the runs whose convergence is recorded), or runs where a distillation term's gradient "
        "stayed above 10x the segmentation loss's in a block of the student after the warm-up "
        "(`gradient_flagged_runs`)."
    )
    return text if markdown else text.replace("`", "")
