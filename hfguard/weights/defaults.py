"""Threshold defaults of the base diff ([tool.hfguard.thresholds.weights]), in a module without numpy:
weights/check.py declares them (Check.THRESHOLDS) and weights/diff.py reads them."""

from __future__ import annotations

from typing import Any

DIFF_DEFAULTS: dict[str, Any] = {
    "surgical-max-tensors": 4,        # "confined": at most this many changed tensors ...
    "surgical-max-share": 0.10,       # ... or this share of all tensors
    "low-rank-energy": 0.90,          # top singular direction holds this share of ||delta||^2
    "row-sparse-share": 0.02,         # rows carrying 90% of ||delta||^2, as a share of rows
    "embedding-row-rel": 0.10,        # an embedding row moved by 10% of its norm ...
    "embedding-row-vs-median": 20.0,  # ... and 20x the median row's move
    # a narrow-shaped (ROME) or dense (MEMIT over several facts, FT-L) matrix change inside a
    # fine-tune, z against the model's changes (bench/calibrate_weights.py: clean max 2.9, and 2.89
    # for dense changes: a 3-step fine-tune of the tiny gpt-oss) and moved this many times what its
    # role and block predict
    "outlier-rel-z": 3.8,
    "outlier-dense-z": 3.8,
    "outlier-min-ratio": 3.0,
    "role-coverage": 0.9,             # a role changed in this share of its layers: adapter/fine-tune
    "confined-min-rel": 1e-3,         # a confined dense change below this is rounding, not an edit
    "diff-spectral-max-elements": 64 << 20,
}
