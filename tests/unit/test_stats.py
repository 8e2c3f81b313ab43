"""Tests for hkd.evaluate.stats."""

import itertools
import warnings

import numpy as np
import pytest
from scipy import stats as st

from hkd.evaluate.stats import (
    FRAGILE_MARGIN,
    VERDICTS,
    ci_detectable_effect,
    contrast_bootstrap_ci,
    crossed_bootstrap_ci,
    holm,
    min_detectable_effect,
    paired_bootstrap_ci,
    verdict,
    verdict_margin,
    wilcoxon_p,
    wilcoxon_power,
)


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


# --------------------------------------------------------------------------- crossed (case x seed) bootstrap
def two_arms(rng, n_cases=6, n_seeds=3, seed_sd=0.03, effect=0.0):
    """(case x seed) values of two methods sharing each case's difficulty, with run-to-run spread."""
    case = rng.normal(0, 0.08, (n_cases, 1))
    return [0.7 + shift + case + rng.normal(0, 0.02, (n_cases, 1)) + rng.normal(0, seed_sd, (1, n_seeds))
            + rng.normal(0, 0.015, (n_cases, n_seeds)) for shift in (effect, 0.0)]


@pytest.mark.parametrize("seed_sd", [0.0, 0.03])
def test_crossed_bootstrap_ci_misses_the_true_difference_rarely(seed_sd):
    """6 cases, 3 seeds, no true difference: each side of the 95% CI misses 0 at most 2.5% of the
    time plus sampling slack (a plain percentile bootstrap misses 5-6% on each side here)."""
    n = 400
    below = above = 0
    for i in range(n):
        m, b = two_arms(np.random.default_rng(i), seed_sd=seed_sd)
        _, low, high = crossed_bootstrap_ci(m, b, n_boot=1000, seed=i)
        below += low > 0
        above += high < 0
    assert below / n <= 0.03 and above / n <= 0.03, (below, above)


def test_crossed_bootstrap_ci_holds_the_run_to_run_spread():
    rng = np.random.default_rng(1)
    m, b = two_arms(rng, seed_sd=0.0, effect=0.05)
    mean, low, high = crossed_bootstrap_ci(m, b, seed=0)
    assert mean == pytest.approx(m.mean() - b.mean()) and low < mean < high
    spread = rng.normal(0, 0.05, (1, 3))  # the same shift for every case of a run
    mean2, low2, high2 = crossed_bootstrap_ci(m + spread, b, seed=0)
    assert mean2 == pytest.approx(mean + spread.mean())
    assert high2 - low2 > 1.5 * (high - low)


def test_crossed_bootstrap_ci_inputs():
    m, b = two_arms(np.random.default_rng(2))
    assert crossed_bootstrap_ci(m, b, seed=4) == crossed_bootstrap_ci(m, b, seed=4)
    assert crossed_bootstrap_ci(m, b[:, :2], seed=4)[0] == pytest.approx(m.mean() - b[:, :2].mean())
    assert all(np.isnan(v) for v in crossed_bootstrap_ci(np.empty((0, 3)), np.empty((0, 3))))
    with pytest.raises(ValueError, match="same cases"):
        crossed_bootstrap_ci(m, b[:5])
    with pytest.raises(ValueError, match="finite"):
        crossed_bootstrap_ci(np.where(m > 0.7, np.nan, m), b)
    with pytest.raises(ValueError, match="cases, seeds"):
        crossed_bootstrap_ci(m[:, 0], b)


# --------------------------------------------------------------------------- detectable effects
def unit_sd(n, seed=0):
    d = np.random.default_rng(seed).normal(0, 1, n)
    return (d - d.mean()) / d.std(ddof=1)  # sd exactly 1


def simulated_power(shift, n, alpha, sims=20000, seed=0):
    """Brute force: the share of normal samples (mean ``shift``, sd 1) on which scipy's exact one-sided
    Wilcoxon test gives p < alpha."""
    x = np.random.default_rng(seed).normal(shift, 1.0, (sims, n))
    return (st.wilcoxon(x, axis=1, alternative="greater", method="exact").pvalue < alpha).mean()


@pytest.mark.parametrize("n, alpha", [(6, 0.05), (10, 0.05), (10, 0.05 / 8)])
def test_wilcoxon_power_matches_a_brute_force_simulation(n, alpha):
    for shift in (0.0, 0.5, 1.0, 1.5):
        # simulation standard error at most 0.0035; the function's own estimate about as precise
        assert wilcoxon_power(shift, n, alpha) == pytest.approx(simulated_power(shift, n, alpha, seed=n), abs=0.015)
    assert wilcoxon_power(0.0, n, alpha) < alpha  # the exact test keeps its level (conservative: discrete)


@pytest.mark.parametrize("n", [6, 10, 25])
def test_min_detectable_effect_has_the_stated_power(n):
    d = unit_sd(n, seed=n)
    mde = min_detectable_effect(d)
    assert simulated_power(mde, n, 0.05, seed=1) == pytest.approx(0.8, abs=0.015)
    assert simulated_power(0.8 * mde, n, 0.05, seed=1) < 0.75  # not any larger shift: the smallest one
    assert min_detectable_effect(d * 0.1) == pytest.approx(mde * 0.1)


def test_min_detectable_effect_grows_with_the_sd_and_the_correction_and_shrinks_with_n():
    d = unit_sd(10)
    mdes = [min_detectable_effect(d * sd) for sd in (0.01, 0.05, 0.1, 0.2)]
    assert all(a < b for a, b in itertools.pairwise(mdes))
    assert min_detectable_effect(d) < min_detectable_effect(d, alpha=0.05 / 4) < min_detectable_effect(d, 0.05 / 8)
    assert min_detectable_effect(unit_sd(12)) < min_detectable_effect(unit_sd(8)) < min_detectable_effect(unit_sd(6))


def test_min_detectable_effect_is_infinite_where_the_wilcoxon_test_cannot_reach_the_alpha():
    assert np.isinf(min_detectable_effect([0.1, 0.2, 0.3, 0.1]))  # best one-sided p: 1/16 > 0.05
    assert np.isfinite(min_detectable_effect([0.1, 0.2, 0.3, 0.1, 0.2]))  # 1/32 < 0.05
    # 6 cases reach 1/64 = 0.0156 at best: below 0.05 / 3, not below 0.05 / 4 (Holm's first step over 4 claims)
    six = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3]
    assert np.isfinite(min_detectable_effect(six, alpha=0.05 / 3)) and np.isinf(min_detectable_effect(six, 0.05 / 4))
    assert np.isinf(min_detectable_effect(six, alpha=0.05 / 12))
    assert np.isfinite(min_detectable_effect(six * 2, alpha=0.05 / 12))  # 12 cases: 1/4096
    assert np.isinf(min_detectable_effect([0.1]))
    assert min_detectable_effect(np.full(8, 0.2)) == 0.0
    assert wilcoxon_power(10.0, 6, 0.05 / 4) == 0.0


def test_ci_detectable_effect_excludes_zero_with_the_stated_power():
    sigma = 0.02
    half = 1.959964 * sigma
    effect = ci_detectable_effect(-half, half)
    assert effect == pytest.approx(2.8016 * sigma, rel=1e-3)
    # an estimate ~ N(effect, sigma) has its 95% CI above 0 with probability 0.8
    assert st.norm.sf(half, loc=effect, scale=sigma) == pytest.approx(0.8, abs=1e-3)


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
    # all 5 positive: W- = 0, P(W- <= 0) = 1/32; one-sided (the default) 1/32, two-sided 2/32
    assert wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(1 / 32)
    assert wilcoxon_p([1, 2, 3, 4, 5], alternative="two-sided") == pytest.approx(2 / 32)
    # W- = 2: subsets of {1..5} with sum <= 2 are {}, {1}, {2} -> 3/32, two-sided 6/32
    assert wilcoxon_p([1, -2, 3, 4, 5]) == pytest.approx(3 / 32)
    assert wilcoxon_p([1, -2, 3, 4, 5], alternative="two-sided") == pytest.approx(6 / 32)
    # the one-sided test finds no evidence in a difference the other way
    assert wilcoxon_p([-1, -2, -3, -4, -5]) == pytest.approx(1.0)


def test_wilcoxon_matches_exact_enumeration():
    d = [0.3, -1.1, 2.4, 0.7, 1.9, -0.2, 1.3, 0.9, -0.55]
    assert wilcoxon_p(d, alternative="two-sided") == pytest.approx(exact_two_sided_p(d))
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w = ranks[np.asarray(d) > 0].sum()
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))]
    assert wilcoxon_p(d) == pytest.approx(np.mean(np.array(sums) >= w))


@pytest.mark.parametrize("d", [[], [0.7]])
def test_wilcoxon_without_two_differences_returns_nan_silently(d):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(wilcoxon_p(d))


@pytest.mark.parametrize("d", [[0.0, 0.0, 0.0], np.zeros(20)])
def test_wilcoxon_of_no_difference_at_all_is_one(d):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert wilcoxon_p(d) == 1.0 and wilcoxon_p(d, alternative="two-sided") == 1.0


# --------------------------------------------------------------------------- holm
def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; an untested claim (nan) stays nan and does not count: m = 2
    assert holm([0.6, np.nan, 0.2]) == pytest.approx([0.6, np.nan, 0.4], nan_ok=True)
    assert holm([0.7, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.03]) == pytest.approx([0.03]) and holm([]).size == 0
    with pytest.raises(ValueError, match="p-values"):
        holm([0.1, 1.5])


def test_holm_keeps_the_family_wise_error_rate():
    """10 true null claims of 10 exact one-sided tests on 8 cases each: any rejection at 0.05 in at most
    5% of 2000 families (raw p: about 40%)."""
    x = np.random.default_rng(0).normal(0, 1, (2000, 10, 8))
    p = st.wilcoxon(x, axis=2, alternative="greater", method="exact").pvalue
    any_raw = (p < 0.05).any(axis=1).mean()
    any_holm = np.mean([(holm(row) < 0.05).any() for row in p])
    assert any_raw > 0.3 and any_holm <= 0.05, (any_raw, any_holm)


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


# --------------------------------------------------------------------------- verdict margin
@pytest.mark.parametrize(
    "verdict_, low, high, can_support, margin",
    [
        ("supported", 0.05, 0.15, True, 1.0),  # low one half-width above 0
        ("supported", 0.01, 0.09, True, 0.25),
        ("not supported", -0.074, -0.009, True, 0.009 / 0.0325),  # a verdict that did flip with the CPU
        ("inconclusive", -0.074, 0.024, True, 0.024 / 0.049),  # the same claim on the other CPU
        ("inconclusive", -0.05, 0.05, True, 1.0),  # centred on 0: as far from either verdict as it gets
        ("inconclusive", -0.001, 0.1, True, 0.001 / 0.0505),  # just across 0
        ("inconclusive", -0.01, 0.1, False, 0.1 / 0.055),  # nothing can be supported: only high counts
        ("inconclusive", 0.01, 0.09, True, 0.0),  # CI above 0, held back by p alone
        ("inconclusive", 0.01, 0.09, False, 0.09 / 0.04),
        ("not supported", 0.0, 0.0, True, 0.0),  # no change at all, on the boundary
        ("supported", 0.1, 0.1, True, float("inf")),
    ],
)
def test_verdict_margin_by_hand(verdict_, low, high, can_support, margin):
    assert verdict_margin(verdict_, low, high, can_support) == pytest.approx(margin)


def test_a_ci_just_crossing_zero_is_fragile_and_a_wide_margin_is_not():
    assert FRAGILE_MARGIN == 0.5
    for low, high in ((0.002, 0.1), (-0.1, -0.002), (-0.001, 0.2), (-0.2, 0.001)):
        v = verdict(0.0, low, high, 0.001)
        assert verdict_margin(v, low, high) < FRAGILE_MARGIN, (low, high, v)
    for low, high in ((0.05, 0.1), (-0.1, -0.05), (-0.1, 0.1)):
        v = verdict(0.0, low, high, 0.001)
        assert verdict_margin(v, low, high) >= FRAGILE_MARGIN, (low, high, v)


def test_verdict_margin_edge_inputs():
    assert np.isnan(verdict_margin("inconclusive", float("nan"), float("nan")))
    with pytest.raises(ValueError, match="unknown verdict 'maybe'"):
        verdict_margin("maybe", 0.0, 1.0)


# --------------------------------------------------------------------------- contrasts of more arms
def test_a_two_arm_contrast_is_the_crossed_bootstrap():
    m, b = two_arms(np.random.default_rng(6), effect=0.03)
    assert contrast_bootstrap_ci([m, b], [1, -1], n_boot=2000, seed=3) == crossed_bootstrap_ci(m, b, n_boot=2000, seed=3)


def test_a_gain_gap_contrast_covers_the_true_gap():
    """(a's method - a's scratch) - (b's method - b's scratch) over four arms, 6 cases and 3 seeds each:
    its observed value is that sum of means, and with no true gap each side of the 95% CI misses 0 at most
    2.5% of the time plus sampling slack."""
    n = 200
    below = above = 0
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        a_m, a_s = two_arms(rng, effect=0.05)
        b_m, b_s = two_arms(rng, effect=0.05)
        mean, low, high = contrast_bootstrap_ci([a_m, a_s, b_m, b_s], [1, -1, -1, 1], n_boot=1000, seed=i)
        assert mean == pytest.approx(a_m.mean() - a_s.mean() - b_m.mean() + b_s.mean())
        below += low > 0
        above += high < 0
    assert below / n <= 0.04 and above / n <= 0.04, (below, above)


def test_contrast_bootstrap_ci_inputs():
    m, b = two_arms(np.random.default_rng(2))
    with pytest.raises(ValueError, match="one weight per arm"):
        contrast_bootstrap_ci([m, b], [1])
    with pytest.raises(ValueError, match="same cases"):
        contrast_bootstrap_ci([m, b[:5], m], [1, -1, 1])
    assert all(np.isnan(v) for v in contrast_bootstrap_ci([np.empty((0, 3))] * 4, [1, -1, -1, 1]))
