"""Robust location and scale: the median and the MAD scaled to a standard deviation, with a floor.

One definition for every tier (sibling layers, trap-neuron biases, base-diff outliers, homoglyph
candidates): a z-score of 6 means the same thing everywhere. The floor is in standard-deviation
units and keeps a near-constant clean population from turning noise into huge z-scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAD_TO_SIGMA = 1.4826   # MAD x this = the standard deviation, for normal data


def robust_scale(values: Sequence[float] | np.ndarray, floor: float = 0.0, *,
                 std_fallback: bool = False) -> tuple[float, float]:
    """(median, max(1.4826 * MAD, floor)). `std_fallback`: where more than half the values are
    equal (MAD 0), the standard deviation instead."""
    x = np.asarray(values, dtype=np.float64).ravel()
    med = float(np.median(x))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(x - med)))
    if scale == 0 and std_fallback:
        scale = float(x.std())
    return med, max(scale, floor)


def robust_z(values: Sequence[float] | np.ndarray, floor: float = 0.0) -> Any:
    """(x - median) / robust scale, as a float64 array."""
    x = np.asarray(values, dtype=np.float64)
    med, scale = robust_scale(x, floor)
    return (x - med) / max(scale, 1e-12)
