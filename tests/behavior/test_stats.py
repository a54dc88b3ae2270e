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
    same = stats.delong_paired(pos, neg, pos, neg)
    assert same["auc_diff"] == 0 and same["p_value"] == pytest.approx(0.5)


def test_tpr_at_fpr_threshold_and_resolution():
    neg = np.arange(100, dtype=float)  # scores 0..99
    pos = np.array([99.5, 98.5, 97.5, 50.0])
    r = stats.tpr_at_fpr(pos, neg, 0.01)  # one false positive allowed: threshold 98
    assert r["tpr"] == 0.5 and r["achieved_fpr"] == 0.01 and not r["resolution_limited"]
    r = stats.tpr_at_fpr(pos, neg, 0.001)  # below 1/100: zero false positives
    assert r["tpr"] == 0.25 and r["achieved_fpr"] == 0.0 and r["resolution_limited"]


def test_clopper_pearson_matches_scipy():
    from scipy.stats import binomtest

    for k, n in [(0, 20), (3, 20), (20, 20), (7, 64)]:
        ci = binomtest(k, n).proportion_ci(method="exact")
        assert stats.clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


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
