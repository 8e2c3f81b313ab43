"""Paired statistics for comparing two methods on the same cases.

Differences are always ``method - baseline`` oriented so that a positive value
means an improvement (negate lower-is-better metrics such as HD95 first).
The study's unit is the patient (test case): :func:`crossed_bootstrap_ci` takes one
value per case and seed for each arm (:func:`contrast_bootstrap_ci` for a weighted sum of
more arms, such as one student's gain minus another's), :func:`wilcoxon_p` and
:func:`min_detectable_effect` take the case-level differences.

Every claim tested here is one-sided ("the method improves over the baseline"), so
:func:`wilcoxon_p` defaults to the one-sided exact Wilcoxon signed-rank test
(``alternative="greater"``), :func:`min_detectable_effect` computes that test's power, and
:func:`holm` adjusts the p-values of a family of claims for multiplicity (Holm's step-down
method, which controls the family-wise error rate).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
from scipy import stats as _st

__all__ = ["FRAGILE_MARGIN", "VERDICTS", "ci_detectable_effect", "contrast_bootstrap_ci", "crossed_bootstrap_ci",
           "holm", "min_detectable_effect", "paired_bootstrap_ci", "verdict", "verdict_margin", "wilcoxon_p",
           "wilcoxon_power"]

#: Possible return values of :func:`verdict`.
VERDICTS = ("supported", "not supported", "inconclusive")
#: A verdict whose :func:`verdict_margin` is below this is fragile: its deciding CI end lies within about one
#: standard error (the half-width / 1.96 of a 95% CI) of 0, a shift a rerun on another CPU or seed set can make.
FRAGILE_MARGIN = 0.5

_BOOT_CHUNK = 2_000_000  # resampled values drawn per chunk (bounds memory)


def _as_1d(diffs) -> np.ndarray:
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("differences must be finite")
    return d


def paired_bootstrap_ci(
    diffs, n_boot: int = 10000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of the mean of paired differences.

    Resamples the ``n`` differences with replacement ``n_boot`` times using
    ``np.random.default_rng(seed)`` and returns ``(mean, low, high)``: the observed
    mean and the ``(1-ci)/2`` and ``(1+ci)/2`` percentiles of the resampled means.
    Returns ``(nan, nan, nan)`` for an empty input; raises ``ValueError`` on
    non-finite differences or invalid ``n_boot``/``ci``.
    """
    d = _as_1d(diffs)
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    if not 0.0 < ci < 1.0:
        raise ValueError("ci must be in (0, 1)")
    n = d.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot, dtype=np.float64)
    step = max(1, _BOOT_CHUNK // n)
    for start in range(0, n_boot, step):
        stop = min(start + step, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(d.mean()), float(low), float(high)


def _case_by_seed(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] < 1:
        raise ValueError(f"{name} must be a (cases, seeds) array, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite")
    return v


def _inflated(values: np.ndarray, ci: float, seed_df: int) -> np.ndarray:
    """``values`` with its case and seed effects widened by ``sqrt(k / (k - 1)) * t(df) / z``.

    ``k`` counts the cases (``df = k - 1``) or the seeds (``df = seed_df``: both arms' seeds
    minus 2, their spreads pooled as in a two-sample t-test); ``t`` and ``z`` are quantiles at
    ``(1 + ci) / 2``. The plain bootstrap of a mean of ``k`` values has ``(k - 1) / k`` of the
    unbiased variance, and normal tails where a mean of few values has Student-t tails: with
    6 cases and 3 seeds per arm its 95% interval misses the true difference 5-6% of the time on
    each side instead of 2.5%. Rescaling the row (case) and column (seed) effects of the
    two-way decomposition (the small-sample correction of residual resampling, carried to
    t quantiles) makes each level's percentile interval as wide as its t interval; in
    simulations of that design each side then misses 1-3% of the time. The means are unchanged.
    """
    q = (1.0 + ci) / 2.0
    grand = values.mean()
    case_eff = values.mean(axis=1, keepdims=True) - grand
    seed_eff = values.mean(axis=0, keepdims=True) - grand
    out = values.copy()
    for eff, k, df in ((case_eff, values.shape[0], values.shape[0] - 1), (seed_eff, values.shape[1], seed_df)):
        if k > 1:
            out += (np.sqrt(k / (k - 1)) * _st.t.ppf(q, df) / _st.norm.ppf(q) - 1.0) * eff
    return out


def crossed_bootstrap_ci(method, baseline, n_boot: int = 10000, ci: float = 0.95,
                         seed: int = 0) -> tuple[float, float, float]:
    """Hierarchical percentile-bootstrap CI of ``mean(method) - mean(baseline)`` over cases.

    ``method`` and ``baseline`` are ``(cases, seeds)`` arrays over the same cases (rows
    in the same order): each entry is one run's value for one case, already averaged
    over the organs (or slices) of that case, which therefore stay together. The seed
    counts of the two arms may differ.

    Each of the ``n_boot`` replicates (``np.random.default_rng(seed)``) resamples the
    cases with replacement, and, independently, each arm's seeds with replacement; the
    drawn seeds are shared by all cases of the replicate, because one seed is one
    trained network that predicts every case (a crossed two-level bootstrap: resampling
    seeds separately within each case would average a bad run away and understate the
    run-to-run spread). The replicate's statistic is the mean over the drawn cases of
    the method's seed-mean minus the baseline's seed-mean. Before resampling, each arm's
    case and seed effects are widened for the few cases and seeds (see :func:`_inflated`).
    Returns ``(mean, low, high)`` with the observed mean difference; ``(nan, nan, nan)``
    without cases. With one seed per arm only the cases are resampled.
    """
    m = _case_by_seed(method, "method")
    b = _case_by_seed(baseline, "baseline")
    if m.shape[0] != b.shape[0]:
        raise ValueError(f"method and baseline need the same cases, got {m.shape[0]} and {b.shape[0]}")
    return contrast_bootstrap_ci([m, b], [1.0, -1.0], n_boot=n_boot, ci=ci, seed=seed)


def contrast_bootstrap_ci(arms, weights, n_boot: int = 10000, ci: float = 0.95,
                          seed: int = 0) -> tuple[float, float, float]:
    """The crossed bootstrap of :func:`crossed_bootstrap_ci` for ``sum(w_k * mean(arm_k))`` over any arms.

    ``arms`` are ``(cases, seeds)`` arrays over the same cases (rows in the same order), each its own
    trained networks (its seed count its own); ``weights`` their signs or weights, e.g. ``(1, -1, -1, 1)``
    for one student's gain over its scratch run minus another's. A replicate resamples the cases (shared by
    every arm) and, independently, each arm's seeds, in the arms' order; the seed effects are widened with
    the arms' seed spreads pooled (``df``: the seed counts minus the number of arms). Two arms with weights
    ``(1, -1)`` give exactly :func:`crossed_bootstrap_ci`. Returns ``(mean, low, high)``; ``(nan, nan, nan)``
    without cases.
    """
    values = [_case_by_seed(arm, f"arm {k}") for k, arm in enumerate(arms)]
    w = np.asarray(weights, dtype=np.float64).ravel()
    if not values or w.size != len(values):
        raise ValueError(f"need one weight per arm, got {w.size} weights for {len(values)} arms")
    if len({v.shape[0] for v in values}) > 1:
        raise ValueError(f"every arm needs the same cases, got {[v.shape[0] for v in values]}")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    if not 0.0 < ci < 1.0:
        raise ValueError("ci must be in (0, 1)")
    n_cases = values[0].shape[0]
    if n_cases == 0:
        return float("nan"), float("nan"), float("nan")
    seed_df = sum(v.shape[1] for v in values) - len(values)  # the arms' seed spreads, pooled
    rng = np.random.default_rng(seed)
    cases = rng.integers(0, n_cases, size=(n_boot, n_cases))
    means = np.zeros(n_boot)
    for arm, weight in zip(values, w):
        arm = _inflated(arm, ci, seed_df)
        seeds = rng.integers(0, arm.shape[1], size=(n_boot, arm.shape[1]))
        # replicate r: mean over drawn cases i and drawn seeds j of arm[cases[r, i], seeds[r, j]]
        drawn = arm[cases[:, :, None], seeds[:, None, :]]
        means += weight * drawn.mean(axis=(1, 2))
    observed = sum(weight * v.mean(axis=1).mean() for v, weight in zip(values, w))
    alpha = (1.0 - ci) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(observed), float(low), float(high)


def cohort_shift_bootstrap_ci(internal, external, weights, n_boot: int = 10000, ci: float = 0.95,
                              seed: int = 0) -> tuple[float, float, float]:
    """The crossed bootstrap of :func:`contrast_bootstrap_ci` for a contrast's change between two cohorts of
    different patients: ``sum(w_k * (mean(external_k) - mean(internal_k)))``.

    ``internal[k]`` and ``external[k]`` are model k's ``(cases, seeds)`` arrays on each cohort, its seeds the
    same columns in both (one trained network per seed). A replicate resamples each cohort's cases apart and,
    once for both cohorts, each model's seeds. Returns ``(mean, low, high)``.
    """
    inner = [_case_by_seed(a, f"internal arm {k}") for k, a in enumerate(internal)]
    outer = [_case_by_seed(a, f"external arm {k}") for k, a in enumerate(external)]
    w = np.asarray(weights, dtype=np.float64).ravel()
    if not inner or len(inner) != len(outer) or w.size != len(inner):
        raise ValueError(f"need one internal and one external array and one weight per model, got {len(inner)}, "
                         f"{len(outer)} and {w.size}")
    if any(a.shape[1] != b.shape[1] for a, b in zip(inner, outer)):
        raise ValueError("a model needs the same seeds on both cohorts")
    n_in, n_out = inner[0].shape[0], outer[0].shape[0]
    if n_in == 0 or n_out == 0:
        return float("nan"), float("nan"), float("nan")
    seed_df = sum(a.shape[1] for a in inner) - len(inner)
    rng = np.random.default_rng(seed)
    cases_in = rng.integers(0, n_in, size=(n_boot, n_in))
    cases_out = rng.integers(0, n_out, size=(n_boot, n_out))
    means = np.zeros(n_boot)
    for a, b, weight in zip(inner, outer, w):
        a, b = _inflated(a, ci, seed_df), _inflated(b, ci, seed_df)
        seeds = rng.integers(0, a.shape[1], size=(n_boot, a.shape[1]))
        shifted = b[cases_out[:, :, None], seeds[:, None, :]].mean(axis=(1, 2))
        means += weight * (shifted - a[cases_in[:, :, None], seeds[:, None, :]].mean(axis=(1, 2)))
    observed = sum(weight * (b.mean() - a.mean()) for a, b, weight in zip(inner, outer, w))
    alpha = (1.0 - ci) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(observed), float(low), float(high)


def mann_whitney_p(first, second, alternative: str = "greater") -> float:
    """One-sided (``first`` above ``second`` by default) Mann-Whitney U p-value of two independent samples
    (``scipy.stats.mannwhitneyu``, exact where it can be); nan when either is empty."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if not first.size or not second.size:
        return float("nan")
    return float(_st.mannwhitneyu(first, second, alternative=alternative).pvalue)


def wilcoxon_p(diffs, alternative: str = "greater") -> float:
    """Wilcoxon signed-rank p-value of paired differences, one-sided (``diff > 0``) by default.

    Uses ``scipy.stats.wilcoxon`` (zero differences discarded, exact distribution for up to 50
    differences without ties); ``alternative`` is passed on ("greater", "less" or "two-sided").
    Returns 1 when every difference is zero (no evidence of any difference) and ``nan``, without
    raising or warning, when fewer than 2 differences are given.
    """
    d = _as_1d(diffs)
    if d.size < 2:
        return float("nan")
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _st.wilcoxon(d, alternative=alternative)
    return float(res.pvalue)


def _critical_rank_sum(n: int, alpha: float) -> int | None:
    """The smallest ``c`` with ``P0(W+ >= c) < alpha`` for the exact signed-rank statistic ``W+`` of ``n``
    differences (``None`` when even ``W+ = n(n+1)/2``, probability ``2**-n``, is not below ``alpha``).

    Under the null each of the ``2**n`` sign patterns is equally likely; the number of patterns with
    ``W+ = k`` is the number of subsets of ``{1..n}`` summing to ``k`` (counted by adding one rank at a
    time). scipy computes this distribution only inside ``wilcoxon`` and gives no quantile of it.
    """
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for rank in range(1, n + 1):
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    upper = np.cumsum(counts[::-1])[::-1] / 2.0**n  # upper[k] = P0(W+ >= k)
    below = np.flatnonzero(upper < alpha)
    return int(below[0]) if below.size else None


# Normal samples per n: 40,000 (the power estimate's standard error 0.002 at power 0.8) up to 62 cases,
# fewer beyond, down to 10,000 (0.004) from 126 cases, so that the Walsh averages sorted stay near 80 million.
_POWER_DRAWS, _MIN_DRAWS, _POWER_VALUES = 40_000, 10_000, 80_000_000
_POWER_CHUNK = 4_000_000  # Walsh averages held at once (bounds memory)


@functools.lru_cache(maxsize=64)
def _critical_shifts(n: int, c: int) -> np.ndarray:
    """Sorted, for each of up to ``_POWER_DRAWS`` seeded samples ``z`` of ``n`` standard normal values: the
    shift ``t`` above which ``z + t`` has ``W+ >= c``, i.e. the one-sided exact test rejects.

    ``W+`` of ``x`` counts the Walsh averages ``(x_i + x_j) / 2``, ``i <= j``, above 0 (Tukey's identity),
    so ``W+(z + t) >= c`` exactly when ``t`` exceeds minus the ``c``-th largest Walsh average of ``z``.
    Every shift is tested on the same samples, so the estimated power rises monotonically with it.
    """
    i, j = np.triu_indices(n)
    draws = min(_POWER_DRAWS, max(_MIN_DRAWS, _POWER_VALUES // i.size))
    z = np.random.default_rng(20240).standard_normal((draws, n))
    k = i.size - c  # the c-th largest of i.size values, counted from 0 in ascending order
    rows = max(1, _POWER_CHUNK // i.size)
    shifts = [-np.partition((part[:, i] + part[:, j]) / 2.0, k, axis=1)[:, k]
              for part in np.array_split(z, range(rows, len(z), rows))]
    return np.sort(np.concatenate(shifts))


def wilcoxon_power(shift: float, n: int, alpha: float = 0.05) -> float:
    """Power of the one-sided exact Wilcoxon signed-rank test (``p < alpha``) on ``n`` differences drawn
    from a normal distribution with mean ``shift`` and sd 1 (``shift`` in sd units).

    No closed form exists under a normal alternative, and enumerating sign patterns gives only the null
    distribution: the power is the share of 40,000 seeded normal samples (10,000 from 126 cases; the same
    samples for every shift) on which the test rejects, exact for those samples (see :func:`_critical_shifts`;
    above 50 differences scipy's p-value is the normal approximation, whose critical value is within about
    a rank of the exact one). 0 when ``n`` differences cannot reach ``p < alpha`` at all (the smallest p is ``2**-n``).
    """
    c = _critical_rank_sum(n, alpha) if n >= 1 else None
    if c is None:
        return 0.0
    shifts = _critical_shifts(n, c)
    return float(np.searchsorted(shifts, shift, side="left") / shifts.size)


def min_detectable_effect(diffs, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true mean difference the one-sided exact Wilcoxon test detects with ``power`` at ``alpha``.

    From the sample sd ``s`` and count ``n`` of the case-level differences, taken as normal: ``s`` times
    the smallest shift (in sd units) at which :func:`wilcoxon_power` reaches ``power``. Returns ``inf``
    when no effect is detectable: fewer than 2 differences, or too few for the test to reach
    ``p < alpha`` at all (its smallest one-sided p is ``2**-n``: 5 cases at alpha 0.05, 8 at 0.05 / 12).
    Returns 0 when ``s`` is 0.
    """
    if not alpha < power < 1.0:
        raise ValueError("power must be in (alpha, 1)")
    d = _as_1d(diffs)
    n = d.size
    c = _critical_rank_sum(n, alpha) if n >= 2 else None
    if c is None:
        return float("inf")
    s = float(d.std(ddof=1))
    if s == 0.0:
        return 0.0
    shifts = _critical_shifts(n, c)
    # power(t) = share of shifts below t: it reaches `power` just above the ceil(power * draws)-th smallest
    return float(s * shifts[int(np.ceil(power * shifts.size)) - 1])


def ci_detectable_effect(low: float, high: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a CI of this width excludes 0 for with probability ``power``.

    For a CI at level ``1 - alpha`` of half-width ``h`` around a normal estimate, the true
    difference must lie ``h * (z(1 - alpha/2) + z(power)) / z(1 - alpha/2)`` above 0 (1.43 h at
    alpha 0.05 and power 0.8). ``nan`` for a NaN bound.
    """
    z = _st.norm.ppf(1.0 - alpha / 2.0)
    return float((high - low) / 2.0 * (z + _st.norm.ppf(power)) / z)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family of claims (family-wise error rate control).

    With the ``m`` finite p-values sorted ascending, the ``k``-th (from 1) is multiplied by
    ``m - k + 1``, a running maximum keeps the order, and values are capped at 1; a claim is rejected
    at ``alpha`` when its adjusted value is below ``alpha``. ``nan`` entries (untested claims) stay
    ``nan`` and do not count in ``m``. Hand-written: scipy offers only false-discovery-rate control
    (``false_discovery_control``), and statsmodels' ``multipletests`` would be a dependency for five lines.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    if tested.size == 0:
        return out
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def verdict(mean: float, low: float, high: float, p: float, alpha: float = 0.05) -> str:
    """Verdict on the claim "the method improves over the baseline" (``diff > 0``).

    ``p`` is the claim's one-sided p-value (for a claim in a family, Holm-adjusted: :func:`holm`).

    - ``"supported"``: the CI lies entirely above 0 (``low > 0``) and ``p < alpha``;
    - ``"not supported"``: the CI lies entirely at or below 0 (``high <= 0``): the data
      contradict an improvement (an all-zero CI, i.e. no change at all, falls here), however
      significant the difference is the other way (the one-sided test does not look for it);
    - ``"inconclusive"``: anything else, including a CI above 0 with ``p >= alpha``
      and any NaN among ``mean``, ``low``, ``high`` (a NaN ``p`` only blocks
      ``"supported"``).
    """
    if any(np.isnan(v) for v in (mean, low, high)):
        return "inconclusive"
    if low > 0 and not np.isnan(p) and p < alpha:
        return "supported"
    if high <= 0:
        return "not supported"
    return "inconclusive"


def verdict_margin(verdict_: str, low: float, high: float, can_support: bool = True) -> float:
    """How far a verdict is from changing, in units of its CI's half-width ``h = (high - low) / 2``.

    The distance is how far the CI would have to move for :func:`verdict` to change:

    - ``"supported"``: ``low / h`` (``low`` falling to 0 ends it);
    - ``"not supported"``: ``-high / h`` (``high`` rising above 0 ends it);
    - ``"inconclusive"`` with the CI across 0 (``low <= 0 < high``): ``min(-low, high) / h``, the nearer end
      (``low`` rising above 0 makes it "supported" when ``p`` allows, ``high`` falling to 0 "not supported");
      with ``can_support`` false (the cases cannot reach the corrected alpha at all), only ``high / h``;
    - ``"inconclusive"`` with the CI above 0 (held there by ``p``): 0 when ``can_support`` (the CI already
      lies where "supported" needs it; ``p`` alone decides, a boundary the CI does not measure), else
      ``high / h``.

    Small means fragile (:data:`FRAGILE_MARGIN`); ``inf`` for a positive distance on a zero-width CI, ``nan``
    for a NaN bound.
    """
    if verdict_ not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict_!r}; one of {VERDICTS}")
    if np.isnan(low) or np.isnan(high):
        return float("nan")
    if verdict_ == "supported":
        distance = low
    elif verdict_ == "not supported":
        distance = -high
    elif not can_support:
        distance = high
    elif low > 0:
        distance = 0.0
    else:
        distance = min(-low, high)
    half = (high - low) / 2.0
    if half <= 0:
        return float("inf") if distance > 0 else 0.0
    return float(distance / half)
