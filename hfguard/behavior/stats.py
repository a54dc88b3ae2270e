"""Statistics for membership tests and outlier probes: AUC (DeLong), TPR at low FPR with
Clopper-Pearson intervals, bootstrap CIs, robust z-scores, permutation p-values, exposure.

Scores follow one convention: higher means "more likely a member" (or "more anomalous").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _arr(x: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).ravel()


def _placements(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: for each positive, the share of negatives it beats (ties 1/2)."""
    diff = pos[:, None] - neg[None, :]
    psi = (diff > 0) + 0.5 * (diff == 0)
    return psi.mean(axis=1), psi.mean(axis=0)


def roc_auc(pos: Sequence[float], neg: Sequence[float]) -> float:
    p, n = _arr(pos), _arr(neg)
    if not len(p) or not len(n):
        return float("nan")
    v10, _ = _placements(p, n)
    return float(v10.mean())


def delong(pos: Sequence[float], neg: Sequence[float]) -> dict[str, float]:
    """AUC with DeLong's standard error and a one-sided p-value against AUC = 0.5."""
    p, n = _arr(pos), _arr(neg)
    v10, v01 = _placements(p, n)
    auc = float(v10.mean())
    var = (v10.var(ddof=1) / len(p) if len(p) > 1 else 0.0) + (
        v01.var(ddof=1) / len(n) if len(n) > 1 else 0.0
    )
    se = math.sqrt(max(var, 1e-12))
    return {
        "auc": auc,
        "se": se,
        "ci_low": max(0.0, auc - 1.96 * se),
        "ci_high": min(1.0, auc + 1.96 * se),
        "p_value": _norm_sf((auc - 0.5) / se),
    }


def delong_paired(
    pos_a: Sequence[float], neg_a: Sequence[float], pos_b: Sequence[float], neg_b: Sequence[float]
) -> dict[str, float]:
    """Two scorers on the SAME examples (a: candidate, b: reference): AUC_a - AUC_b, its DeLong SE
    (covariance included) and a one-sided p-value for AUC_a > AUC_b."""
    pa, na, pb, nb = _arr(pos_a), _arr(neg_a), _arr(pos_b), _arr(neg_b)
    if len(pa) != len(pb) or len(na) != len(nb):
        raise ValueError("paired DeLong needs the same positives and negatives for both scorers")
    a10, a01 = _placements(pa, na)
    b10, b01 = _placements(pb, nb)
    s10 = np.cov(np.vstack([a10, b10])) if len(pa) > 1 else np.zeros((2, 2))
    s01 = np.cov(np.vstack([a01, b01])) if len(na) > 1 else np.zeros((2, 2))
    c = np.array([1.0, -1.0])
    var = float(c @ s10 @ c / len(pa) + c @ s01 @ c / len(na))
    se = math.sqrt(max(var, 1e-12))
    d = float(a10.mean() - b10.mean())
    return {
        "auc_diff": d,
        "se": se,
        "ci_low": d - 1.96 * se,
        "ci_high": d + 1.96 * se,
        "p_value": _norm_sf(d / se),
    }


def _norm_sf(z: float) -> float:
    from scipy.stats import norm

    return float(norm.sf(z))


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) binomial interval, from scipy."""
    from scipy.stats import binomtest

    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="exact")
    return float(ci.low), float(ci.high)


def tpr_at_fpr(pos: Sequence[float], neg: Sequence[float], fpr: float) -> dict[str, Any]:
    """TPR at the strictest threshold whose empirical FPR does not exceed `fpr`.

    With n negatives the empirical FPR moves in steps of 1/n: when `fpr` < 1/n the threshold is the
    largest negative score (zero false positives), and `resolution_limited` says the figure is then
    a TPR at 0 observed false positives, not a measured TPR at that FPR. The interval is
    Clopper-Pearson on the positives, given the threshold.
    """
    p, n = np.sort(_arr(pos)), np.sort(_arr(neg))[::-1]
    k_fp = int(math.floor(fpr * len(n) + 1e-9))  # false positives allowed
    thr = n[k_fp] if k_fp < len(n) else -np.inf  # scores strictly above thr are called members
    tp = int((p > thr).sum())
    lo, hi = clopper_pearson(tp, len(p))
    return {
        "fpr_target": fpr,
        "tpr": tp / len(p) if len(p) else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "achieved_fpr": float((n > thr).sum() / len(n)) if len(n) else float("nan"),
        "n_pos": len(p),
        "n_neg": len(n),
        "resolution_limited": fpr < 1.0 / max(len(n), 1),
    }


def bootstrap_ci(
    stat: Callable[[np.ndarray, np.ndarray], float],
    pos: Sequence[float],
    neg: Sequence[float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap, resampling positives and negatives separately (stratified)."""
    p, n = _arr(pos), _arr(neg)
    rng = np.random.default_rng(seed)
    vals = [
        stat(p[rng.integers(0, len(p), len(p))], n[rng.integers(0, len(n), len(n))]) for _ in range(n_boot)
    ]
    lo, hi = np.nanquantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def roc_curve(pos: Sequence[float], neg: Sequence[float], max_points: int = 200) -> dict[str, list[float]]:
    """ROC points (fpr, tpr) as the threshold sweeps down the scores, thinned to `max_points`."""
    p, n = _arr(pos), _arr(neg)
    scores = np.concatenate([p, n])
    labels = np.concatenate([np.ones(len(p)), np.zeros(len(n))])
    order = np.argsort(-scores, kind="stable")
    tpr = np.concatenate([[0.0], np.cumsum(labels[order]) / max(len(p), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(1 - labels[order]) / max(len(n), 1)])
    keep = np.unique(np.linspace(0, len(tpr) - 1, min(max_points, len(tpr))).astype(int))
    return {"fpr": [round(float(v), 5) for v in fpr[keep]], "tpr": [round(float(v), 5) for v in tpr[keep]]}


def permutation_pvalue(
    a: Sequence[float], b: Sequence[float], n_perm: int = 2000, seed: int = 0, two_sided: bool = False
) -> float:
    """p-value for mean(a) > mean(b) (or |mean(a) - mean(b)| > 0 with `two_sided`) by permuting the
    labels (scipy.stats.permutation_test; randomized, add-one corrected)."""
    from scipy.stats import permutation_test

    def diff(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        d = np.mean(x, axis=axis) - np.mean(y, axis=axis)
        return np.abs(d) if two_sided else d

    res = permutation_test((_arr(a), _arr(b)), diff, permutation_type="independent", vectorized=True,
                           n_resamples=n_perm, alternative="greater", rng=np.random.default_rng(seed))
    return float(res.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1): rejecting where the
    adjusted p <= alpha keeps the chance of any false alarm among the tests <= alpha."""
    p = _arr(p_values)
    order = np.argsort(p, kind="stable")
    adj = np.empty(len(p))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * float(p[i])))
        adj[i] = running
    return [float(v) for v in adj]


def exposure(true_loss: float, alt_losses: Sequence[float]) -> float:
    """Secret-Sharer exposure (Carlini et al. 2019) estimated by sampling: log2(m+1) - log2(rank),
    rank = 1 + the number of m random alternatives the model finds at least as likely. Capped at
    log2(m+1) by the sample size."""
    alts = _arr(alt_losses)
    rank = 1 + int((alts <= true_loss).sum())
    return math.log2(len(alts) + 1) - math.log2(rank)
