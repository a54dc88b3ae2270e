"""The weights tier's elementwise passes as compiled loops (numba, hfguard.weights.kernels), where
numba is installed: the statistics pass's per-block sums (`block_sums`), a base diff's delta
with its norms and row energies (`delta_sums`) and whole-tensor widening (`widen`).

numpy makes a separate pass over a block for each sum (moments, square, extremes, zeros, row
norms: ~9 calls per 2 MiB block); here every value is read once, in segments short enough to stay
in L1, by loops the compiler vectorises. Floating-point reductions only vectorise when they may be
reassociated (`fastmath` "reassoc"); no flag that assumes finite values is set, and a block whose
sum is not finite is handed back to the numpy path, which counts NaN and Inf.
Extremes are taken on the values' bits (a float32's sign-magnitude bits made two's-complement
order the same as the float order): integer max/min vectorise where float ones (NaN-aware) do not.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

# below this much tensor data a scan stays on numpy: numba's import and first call from its disk
# cache cost ~0.5 s and ~120 MB RSS per process (MiniLM's weights-tier scan: 0.41 -> 1.0 s),
# while the compiled loops save ~0.3 s per GB of bfloat16 on 2 cores (bench/bench_weights.py)
MIN_BYTES = 2 << 30

_loaded: dict[str, Any] = {}
_loading = threading.Lock()


def load() -> Any:
    """The compiled kernels module (hfguard.weights.kernels), or None where numba is missing or refused
    (HFGUARD_NO_NUMBA=1). Loaded and warmed here, before any pass starts its clock: numba imports in
    ~0.15 s and compiles each kernel on its first call (~1 s each the first time on a machine, then
    from its disk cache, `cache=True`: ~0.35 s for all three per process). Compiled inside a pass,
    that second stalled the first tensor, and a budget's rate projection read it as a crawl
    (a 60 s budget refused a 45 MB model: "needs --budget 96860")."""
    with _loading:   # one warm-up; no caller sees a half-loaded state
        if "kernels" not in _loaded:
            _loaded["kernels"] = None
            if not os.environ.get("HFGUARD_NO_NUMBA"):
                try:
                    from hfguard.weights import kernels
                    _warm(kernels)
                # numba missing, or unable to compile or cache here (no writable cache folder: numba
                # raises RuntimeError): the numpy path gives the same numbers, only slower
                except Exception:  # noqa: BLE001
                    return None
                _loaded["kernels"] = kernels
        return _loaded["kernels"]


def loaded() -> Any:
    """The kernels module if a compiled backend already loaded it in this process, else None:
    helpers that any scan calls (widening) use numba only where the scan chose to pay for it."""
    return _loaded.get("kernels")


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only view: arrays the kernels only read are passed read-only whatever the caller's
    (numba compiles one signature per writability; a mapped file's pages are read-only)."""
    view = a.view()
    view.flags.writeable = False
    return view


def _warm(kernels: Any) -> None:
    """Each kernel called once on tiny arrays: its one signature compiled (or loaded from cache)."""
    f = np.zeros((2, 8), np.float32)
    bits = np.zeros(16, np.uint16)
    kernels.block_sums(_ro(f), f.reshape(-1).view(np.uint32), _ro(bits), 1, 0.0, np.empty(2),
                       np.empty(2, np.int64))
    kernels.delta_sums(_ro(f), _ro(f), np.empty(16, np.float32), np.empty(2))
    kernels.widen(_ro(bits), np.empty(16, np.uint32), 1)


_NOTHING = np.empty(0, np.uint32)   # `out` and `raw` of a block that is float32 already
_NOTHING_RAW = _ro(np.empty(0, np.uint16))
WIDENS = {"bfloat16": 1, "float16": 2}   # stored dtypes the kernel widens itself


def block_sums(blk: np.ndarray, shift: float, row_sq: np.ndarray, row_nz: np.ndarray,
               raw: np.ndarray | None = None, dtype: str = "float32",
               ) -> tuple[float, float, float, float, float, float] | None:
    """(s1, s2, s3, s4, hi, lo) of a float32 row block, filling row_sq (float64) and row_nz (int64);
    with `raw` (the block's stored bits, flat, of a dtype in WIDENS), `blk` (writable) is first
    filled from it. None where the numpy path must do it: no numba, a block not in C order, or a
    non-finite sum (`blk` may then be part-filled)."""
    kernels = load()
    if kernels is None or not blk.flags.c_contiguous or blk.dtype != np.float32:
        return None
    if raw is None:
        finite, *sums = kernels.block_sums(_ro(blk), _NOTHING, _NOTHING_RAW, 0, shift, row_sq, row_nz)
    else:
        finite, *sums = kernels.block_sums(_ro(blk), blk.reshape(-1).view(np.uint32),
                                           _ro(raw.view(np.uint16)), WIDENS[dtype], shift, row_sq, row_nz)
    return tuple(sums) if finite else None


def delta_sums(w0: np.ndarray, w1: np.ndarray, out: np.ndarray,
               ) -> tuple[float, float, int, np.ndarray] | None:
    """A diff's pass over one tensor pair in one loop: out[:size] = w1 - w0 (flat float32), and
    (|delta|^2, |w0|^2, changed entries, per-row delta energy as float64; a 1-D tensor is one
    row); None where numpy must do it (no numba, not both float32 in C order)."""
    kernels = load()
    if kernels is None or w0.shape != w1.shape or out.size < w0.size or w0.ndim == 0 \
            or not all(a.flags.c_contiguous and a.dtype == np.float32 for a in (w0, w1, out)):
        return None
    rows = int(w0.shape[0]) if w0.ndim >= 2 else 1
    a, b = w0.reshape(rows, -1), w1.reshape(rows, -1)
    row_e = np.empty(rows, np.float64)
    dn2, wn2, changed = kernels.delta_sums(_ro(a), _ro(b), out.reshape(-1)[: w0.size], row_e)
    return float(dn2), float(wn2), int(changed), row_e


def widen(raw: np.ndarray, dtype: str, out: np.ndarray) -> bool:
    """`out` (flat float32, C order, raw.size entries) filled from `raw`'s stored bits in one
    loop (numpy: a copy and a shift, or a conversion); False where numpy must do it."""
    kernels = loaded()
    if kernels is None or dtype not in WIDENS or not raw.flags.c_contiguous \
            or not out.flags.c_contiguous or out.size != raw.size or raw.size == 0:
        return False
    kernels.widen(_ro(raw.reshape(-1).view(np.uint16)), out.reshape(-1).view(np.uint32), WIDENS[dtype])
    return True
