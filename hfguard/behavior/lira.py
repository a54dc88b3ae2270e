"""Offline LiRA (Carlini et al. 2022, "Membership Inference Attacks From First Principles"): the
per-example membership test used to confirm the cheap difficulty-calibrated screen at low FPR.

K reference fine-tunes ("OUT models") are trained on canary subsets that exclude the canaries they
are used for. Each canary's logit-scaled confidence under its OUT models gives a per-canary
Gaussian; the victim's confidence on the canary is scored by the one-sided p-value that it comes
from that Gaussian (a member is more confident than its OUT models). With few OUT models the
paper's fixed-variance variant (one variance pooled over all canaries) is the stable choice.

Pure functions on arrays; `membership.evaluate` trains the models. Scores follow stats.py's
convention: higher means "more likely a member".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def logit_confidence(loss: Sequence[float] | np.ndarray) -> np.ndarray:
    """phi = log(p / (1 - p)) with p = exp(-loss), the model's confidence in the example (loss: mean
    token cross-entropy). The logit makes the per-example distribution close to Gaussian."""
    loss = np.clip(np.asarray(loss, dtype=np.float64), 1e-12, None)
    return -loss - np.log(-np.expm1(-loss))


@dataclass(frozen=True)
class OutDistributions:
    """Per-canary Gaussian of the OUT confidences: mean, standard deviation, OUT observations."""

    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray
    fixed_variance: bool


def fit_out_distributions(
    phi: np.ndarray, out_mask: np.ndarray, *, fixed_variance: bool = True, min_std: float = 1e-3
) -> OutDistributions:
    """`phi[k, i]`: confidence of reference model k on canary i; `out_mask[k, i]`: model k did not
    train on canary i (only those observations are used). Every canary needs one OUT observation;
    the variance is pooled over canaries (`fixed_variance`) or per canary (needs two each)."""
    phi = np.asarray(phi, dtype=np.float64)
    mask = np.asarray(out_mask, dtype=bool)
    if phi.shape != mask.shape or phi.ndim != 2:
        raise ValueError("phi and out_mask must be (models, canaries) arrays of one shape")
    n = mask.sum(axis=0)
    if (n < 1).any():
        raise ValueError(f"{int((n < 1).sum())} canaries have no OUT model")
    mean = np.where(mask, phi, 0.0).sum(axis=0) / n
    sq = np.where(mask, (phi - mean) ** 2, 0.0).sum(axis=0)
    if fixed_variance:
        dof = int((n - 1).sum())
        if dof < 1:
            raise ValueError("the pooled variance needs a canary with two OUT observations")
        std = np.full(phi.shape[1], np.sqrt(sq.sum() / dof))
    else:
        if (n < 2).any():
            raise ValueError("per-canary variance needs two OUT observations for every canary")
        std = np.sqrt(sq / (n - 1))
    return OutDistributions(mean, np.maximum(std, min_std), n, fixed_variance)


def lira_scores(phi_target: Sequence[float] | np.ndarray, out: OutDistributions) -> np.ndarray:
    """-log p, p = P(OUT confidence >= the target model's) under each canary's Gaussian. The spread
    is the predictive one, sigma * sqrt(1 + 1/n), since the mean is itself estimated from n
    models: then p is uniform for non-members even with K = 2..4 OUT models."""
    from scipy.stats import norm

    phi = np.asarray(phi_target, dtype=np.float64)
    z = (phi - out.mean) / (out.std * np.sqrt(1.0 + 1.0 / out.n))
    return -norm.logsf(z)   # log scale: no ties at p ~ 0, where the 0.1% FPR threshold lies


def low_fpr_figures(pos: Sequence[float], neg: Sequence[float]) -> dict[str, Any]:
    """TPR at 1% and 0.1% FPR with Clopper-Pearson intervals (stats.tpr_at_fpr)."""
    from hfguard.behavior import stats

    return {"tpr_at_1pct_fpr": stats.tpr_at_fpr(pos, neg, 0.01),
            "tpr_at_0.1pct_fpr": stats.tpr_at_fpr(pos, neg, 0.001)}


def out_splits(n: int, k: int, seed: int) -> np.ndarray:
    """Which canaries each of the K OUT models trains on, as a (K, n) boolean array: complementary
    pairs of random halves, so every canary is OUT (excluded) for exactly K/2 models and each model
    trains on as many canaries as the victim (half of them)."""
    if k < 2 or k % 2:
        raise ValueError(f"LiRA needs an even number of reference models (complementary halves), not {k}")
    rng = np.random.default_rng(seed)
    trains = np.zeros((k, n), dtype=bool)
    for j in range(0, k, 2):
        perm = rng.permutation(n)
        trains[j, perm[: n // 2]] = True
        trains[j + 1, perm[n // 2 :]] = True
    return trains
