"""Tests for hkd.evaluate.stats."""

import itertools
import warnings

import numpy as np
import pytest

from hkd.evaluate.stats import VERDICTS, paired_bootstrap_ci, verdict, wilcoxon_p


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_constant_diffs_collapse():
    mean, low, high = paired_bootstrap_ci(np.full(12, 0.25))
    assert mean == pytest.approx(0.25) and low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_bootstrap_normal_covers_true_mean():
    d = np.random.default_rng(3).normal(0.5, 1.0, 400)
    mean, low, high = paired_bootstrap_ci(d, n_boot=4000)
    assert mean == pytest.approx(d.mean())
    assert low < 0.5 < high
    assert low < mean < high
    # width close to the normal-theory 2 * 1.96 * sd / sqrt(n)
    assert (high - low) == pytest.approx(2 * 1.96 * d.std(ddof=1) / 20, rel=0.15)


def test_bootstrap_coverage_near_nominal():
    rng = np.random.default_rng(0)
    hits = 0
    n_sets = 200
    for i in range(n_sets):
        d = rng.normal(1.0, 2.0, 40)
        _, low, high = paired_bootstrap_ci(d, n_boot=1000, seed=i)
        hits += low <= 1.0 <= high
    assert 0.88 <= hits / n_sets <= 0.99


def test_bootstrap_seeded_and_ci_level():
    d = np.random.default_rng(5).normal(0, 1, 30)
    assert paired_bootstrap_ci(d, seed=1) == paired_bootstrap_ci(d, seed=1)
    assert paired_bootstrap_ci(d, seed=1) != paired_bootstrap_ci(d, seed=2)
    _, l90, h90 = paired_bootstrap_ci(d, ci=0.90)
    _, l99, h99 = paired_bootstrap_ci(d, ci=0.99)
    assert l99 < l90 < h90 < h99


def test_bootstrap_edge_inputs():
    assert all(np.isnan(v) for v in paired_bootstrap_ci([]))
    assert paired_bootstrap_ci([2.0]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0, np.nan])
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1.0, 2.0], ci=1.0)


# --------------------------------------------------------------------------- wilcoxon
def exact_two_sided_p(d):
    """Exact signed-rank p by enumerating all sign patterns (distinct |d|, no zeros)."""
    d = np.asarray(d, float)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w = ranks[d > 0].sum()
    sums = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in
                     itertools.product((0, 1), repeat=len(d))])
    p = 2 * min((sums <= w).mean(), (sums >= w).mean())
    return min(1.0, p)


def test_wilcoxon_hand_examples():
    # all 5 positive: W- = 0, P(W- <= 0) = 1/32, two-sided 2/32
    assert wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    # W- = 2: subsets of {1..5} with sum <= 2 are {}, {1}, {2} -> 2 * 3/32
    assert wilcoxon_p([1, -2, 3, 4, 5]) == pytest.approx(6 / 32)


def test_wilcoxon_matches_exact_enumeration():
    d = [0.3, -1.1, 2.4, 0.7, 1.9, -0.2, 1.3, 0.9, -0.55]
    assert wilcoxon_p(d) == pytest.approx(exact_two_sided_p(d))


@pytest.mark.parametrize("d", [[], [0.7], [0.0, 0.0, 0.0], np.zeros(20)])
def test_wilcoxon_degenerate_returns_nan_silently(d):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(wilcoxon_p(d))


# --------------------------------------------------------------------------- verdict
@pytest.mark.parametrize(
    "args, expected",
    [
        ((0.05, 0.01, 0.09, 0.001), "supported"),
        ((0.05, 0.01, 0.09, 0.20), "inconclusive"),  # CI > 0 but p not significant
        ((0.05, 0.01, 0.09, float("nan")), "inconclusive"),
        ((0.02, -0.01, 0.05, 0.01), "inconclusive"),  # CI straddles 0
        ((-0.05, -0.09, -0.01, 0.001), "not supported"),
        ((-0.05, -0.09, -0.01, 0.50), "not supported"),  # contradicted whatever p
        ((0.0, 0.0, 0.0, float("nan")), "not supported"),  # no change at all
        ((-0.02, -0.04, 0.0, 0.03), "not supported"),  # CI at or below 0
        ((float("nan"),) * 3 + (float("nan"),), "inconclusive"),
    ],
)
def test_verdict_rules(args, expected):
    assert verdict(*args) == expected
    assert expected in VERDICTS


def test_verdict_alpha():
    assert verdict(0.1, 0.05, 0.15, 0.03, alpha=0.01) == "inconclusive"
    assert verdict(0.1, 0.05, 0.15, 0.03, alpha=0.05) == "supported"
