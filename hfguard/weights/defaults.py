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
    "outlier-rel-z": 3.0,             # a narrow-shaped matrix change that stands out of the rest
    "role-coverage": 0.9,             # a role changed in this share of its layers: adapter/fine-tune
    "confined-min-rel": 1e-3,         # a confined dense change below this is rounding, not an edit
    "diff-spectral-max-elements": 64 << 20,
}
