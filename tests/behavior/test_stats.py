"""The statistics behind behavior findings, against independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hfguard.behavior import stats
from hfguard.robust import robust_z


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 60).astype(float)
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(60)], np.r_[pos, neg])
    assert stats.roc_auc(pos, neg) == pytest.approx(expected)
    assert stats.delong(pos, neg)["auc"] == pytest.approx(expected)


def test_delong_se_agrees_with_bootstrap_and_paired_test_sees_a_better_scorer():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(1, 1, 200), rng.normal(0, 1, 200)
    d = stats.delong(pos, neg)
    lo, hi = stats.bootstrap_ci(stats.roc_auc, pos, neg, n_boot=400)
    assert d["se"] == pytest.approx((hi - lo) / (2 * 1.96), rel=0.3)
    assert d["p_value"] < 1e-6
    weak_pos, weak_neg = pos + rng.normal(0, 3, 200), neg + rng.normal(0, 3, 200)
    better = stats.delong_paired(pos, neg, weak_pos, weak_neg)
    assert better["auc_diff"] > 0 and better["p_value"] < 0.01


def test_delong_interval_covers_the_true_auc_and_paired_p_values_hold_their_level():
    """Over 400 simulated data sets: the 95% CI holds the binormal AUC Phi(1/sqrt 2) about 95% of the
    time, and two equally good scorers on the same examples are called different about 5% of it."""
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    true_auc, covered, rejected, draws = norm.cdf(1 / math.sqrt(2)), 0, 0, 400
    for _ in range(draws):
        pos, neg = rng.normal(1, 1, 100), rng.normal(0, 1, 100)
        d = stats.delong(pos, neg)
        covered += d["ci_low"] <= true_auc <= d["ci_high"]
        a_pos, a_neg, b_pos, b_neg = (x + rng.normal(0, 1, 100) for x in (pos, neg, pos, neg))
        rejected += stats.delong_paired(a_pos, a_neg, b_pos, b_neg)["p_value"] < 0.05
    assert 0.92 <= covered / draws <= 0.98
    assert 0.02 <= rejected / draws <= 0.09


def test_tpr_at_fpr_threshold_and_resolution():
    neg = np.arange(100, dtype=float)  # scores 0..99
    pos = np.array([99.5, 98.5, 97.5, 50.0])
    r = stats.tpr_at_fpr(pos, neg, 0.01)  # one false positive allowed: threshold 98
    assert r["tpr"] == 0.5 and r["achieved_fpr"] == 0.01 and not r["resolution_limited"]
    r = stats.tpr_at_fpr(pos, neg, 0.001)  # below 1/100: zero false positives
    assert r["tpr"] == 0.25 and r["achieved_fpr"] == 0.0 and r["resolution_limited"]


def test_clopper_pearson_is_exact_and_covers():
    """The interval's defining tails (P(X >= k | low) = P(X <= k | high) = alpha/2), and its coverage
    computed exactly over the binomial: never under 95% at any p, yet not needlessly wide."""
    from scipy.stats import binom

    for n in (20, 64):
        cis = [stats.clopper_pearson(k, n) for k in range(n + 1)]
        for k, (lo, hi) in enumerate(cis):
            assert lo == 0.0 if k == 0 else binom.sf(k - 1, n, lo) == pytest.approx(0.025, abs=1e-6)
            assert hi == 1.0 if k == n else binom.cdf(k, n, hi) == pytest.approx(0.025, abs=1e-6)
        cover = [sum(binom.pmf(k, n, p) for k, (lo, hi) in enumerate(cis) if lo <= p <= hi)
                 for p in np.linspace(0.01, 0.99, 99)]
        assert min(cover) >= 0.95 and np.mean(cover) < 0.98   # a 97.5% interval averages ~0.985


def test_tpr_interval_covers_the_true_tpr_at_the_threshold():
    """Members N(2, 1) against a fixed set of 1000 non-members: at 1% FPR the threshold is the 11th
    highest non-member, where the true TPR is known; its CI from 64 members holds it >= 95% of draws."""
    from scipy.stats import norm

    rng = np.random.default_rng(4)
    neg = rng.normal(0, 1, 1000)
    true_tpr = norm.sf(np.sort(neg)[-11] - 2)
    draws = [stats.tpr_at_fpr(rng.normal(2, 1, 64), neg, 0.01) for _ in range(400)]
    assert all(r["achieved_fpr"] == 0.01 for r in draws)
    covered = np.mean([r["ci_low"] <= true_tpr <= r["ci_high"] for r in draws])
    assert covered >= 0.94   # a 90% interval covers ~0.90


def test_robust_z_floor_and_outlier():
    z = robust_z([0.10, 0.11, 0.09, 0.10, 0.12, 0.95], floor=0.01)
    assert z[-1] > 6 and max(abs(z[:-1])) < 2
    assert max(abs(robust_z([0.1] * 5 + [0.1001], floor=0.01))) < 0.1  # no noise blow-up


def test_permutation_pvalue_and_exposure():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1, 1, 50), rng.normal(0, 1, 50)
    assert stats.permutation_pvalue(a, b, n_perm=500) < 0.01
    assert stats.permutation_pvalue(b, a, n_perm=500) > 0.9
    assert stats.permutation_pvalue(b, a, n_perm=500, two_sided=True) < 0.01
    alts = np.linspace(1, 2, 127)
    assert stats.exposure(0.5, alts) == pytest.approx(7.0)  # best of 128: full exposure
    assert stats.exposure(3.0, alts) == pytest.approx(0.0)  # worst: none
    assert stats.exposure(1.5, alts) == pytest.approx(math.log2(128) - math.log2(65))
