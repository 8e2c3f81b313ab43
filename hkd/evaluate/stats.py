"""Paired statistics for comparing two methods on the same cases.

Differences are always ``method - baseline`` oriented so that a positive value
means an improvement (negate lower-is-better metrics such as HD95 first).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as _st

__all__ = ["paired_bootstrap_ci", "wilcoxon_p", "verdict", "VERDICTS"]

#: Possible return values of :func:`verdict`.
VERDICTS = ("supported", "not supported", "inconclusive")

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


def wilcoxon_p(diffs) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences.

    Uses ``scipy.stats.wilcoxon`` with its defaults (zero differences discarded,
    exact distribution for small samples without ties). Returns ``nan``, without
    raising or warning, when fewer than 2 differences are given or all are zero.
    """
    d = _as_1d(diffs)
    if d.size < 2 or not np.any(d != 0):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _st.wilcoxon(d, alternative="two-sided")
    return float(res.pvalue)


def verdict(mean: float, low: float, high: float, p: float, alpha: float = 0.05) -> str:
    """Verdict on the claim "the method improves over the baseline" (``diff > 0``).

    - ``"supported"``: the CI lies entirely above 0 (``low > 0``) and ``p < alpha``;
    - ``"not supported"``: the CI lies entirely at or below 0 (``high <= 0``): the data
      contradict an improvement (an all-zero CI, i.e. no change at all, falls here);
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
