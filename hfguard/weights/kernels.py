"""numba kernels of hfguard.weights.compiled (imported only where numba is installed). Module-level
functions: numba caches them on disk (`cache=True`); functions defined in a closure were compiled
again in every process (1.6 s, measured)."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

SEGMENT = 1024   # float32 sums over at most this many values (then float64): error ~1e-7 relative

_FAST = {"reassoc", "contract", "nsz", "arcp"}   # no "nnan"/"ninf": non-finite values are data here
_jit = numba.njit(nogil=True, cache=True, fastmath=_FAST, error_model="numpy")
# the inner loops as inlined functions over a slice: written inline in the row loop, LLVM
# left them scalar (3.4x slower, measured)
_inline = numba.njit(nogil=True, cache=True, fastmath=_FAST, error_model="numpy", inline="always")


@_inline
def segment_sums(v: Any, shift: Any) -> Any:
    a1 = a2 = a3 = a4 = np.float32(0.0)
    sq, nz = 0.0, np.int32(0)
    for j in range(v.size):
        x = v[j]
        d = x - shift
        d2 = d * d
        a1 += d
        a2 += d2
        a3 += d2 * d
        a4 += d2 * d2
        sq += np.float64(x) * np.float64(x)
        nz += np.int32(x != 0)
    return a1, a2, a3, a4, sq, nz


@_inline
def segment_extremes(bits: Any, hi: Any, lo: Any) -> Any:
    for j in range(bits.size):
        key = bits[j] ^ ((bits[j] >> 31) & np.int32(0x7FFFFFFF))
        hi = key if key > hi else hi
        lo = key if key < lo else lo
    return hi, lo


@_inline
def widen_bf16(raw: Any, out: Any) -> None:   # bfloat16 is the top half of a float32
    for j in range(raw.size):
        out[j] = np.uint32(raw[j]) << np.uint32(16)


@_inline
def widen_f16(raw: Any, out: Any, wide: Any) -> None:
    """float16 bits -> float32 (`out` its bits, `wide` the same memory as float32) without a
    subnormal float anywhere (a process may run with denormals flushed: a library built with
    -ffast-math sets that when loaded): subnormals as their 10-bit integer times 2^-24 (both
    normal float32s), the rest by moving and rebiasing the bits; then the sign."""
    for j in range(raw.size):   # (int32: the signed conversion is the one that vectorises)
        wide[j] = np.float32(np.int32(raw[j]) & np.int32(0x3FF)) * np.float32(2.0 ** -24)
    for j in range(raw.size):
        h = np.uint32(raw[j])
        e = h & np.uint32(0x7C00)
        b = ((h & np.uint32(0x7FFF)) << np.uint32(13)) + np.uint32(112 << 23)   # normal numbers
        special = np.uint32(0x7F800000) | ((h & np.uint32(0x3FF)) << np.uint32(13))   # Inf, NaN
        b = special if e == np.uint32(0x7C00) else b
        b = out[j] if e == np.uint32(0) else b
        out[j] = b | ((h & np.uint32(0x8000)) << np.uint32(16))


@_jit
def block_sums(src: Any, out: Any, raw: Any, kind: int, shift: float, row_sq: Any, row_nz: Any) -> Any:
    """Sums of d, d^2, d^3, d^4 (d = value - shift), the extremes, per row sum of value^2 (float64,
    into row_sq) and non-zero count (into row_nz) of a C-ordered float32 block `src`. With
    kind 1 (bfloat16) or 2 (float16), `src` is first written segment by segment from `raw` (its
    stored bits, flat) through `out` (src's memory as flat uint32). Returns
    (finite, s1, s2, s3, s4, hi, lo); finite False (the rest unset) when a sum is not finite."""
    r, k = src.shape
    flat = src.reshape(-1)
    bits = flat.view(np.int32)
    sh = np.float32(shift)
    s1 = s2 = s3 = s4 = 0.0
    hi, lo = np.int32(-2147483648), np.int32(2147483647)
    for i in range(r):
        sq, nz = 0.0, 0
        for j0 in range(i * k, i * k + k, SEGMENT):
            j1 = min(j0 + SEGMENT, i * k + k)
            if kind == 1:
                widen_bf16(raw[j0:j1], out[j0:j1])
            elif kind == 2:
                widen_f16(raw[j0:j1], out[j0:j1], out[j0:j1].view(np.float32))
            a1, a2, a3, a4, q, n = segment_sums(flat[j0:j1], sh)
            if not np.isfinite(a1):   # a finite sum proves every value finite
                return False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
            hi, lo = segment_extremes(bits[j0:j1], hi, lo)
            s1 += a1
            s2 += a2
            s3 += a3
            s4 += a4
            sq += q
            nz += n
        row_sq[i] = sq
        row_nz[i] = nz
    ends = np.empty(2, np.int32)
    ends[0] = hi ^ ((hi >> 31) & np.int32(0x7FFFFFFF))
    ends[1] = lo ^ ((lo >> 31) & np.int32(0x7FFFFFFF))
    vals = ends.view(np.float32)
    return True, s1, s2, s3, s4, np.float64(vals[0]), np.float64(vals[1])


@_inline
def segment_delta(w0: Any, w1: Any, out: Any) -> Any:
    e = w = np.float32(0.0)
    nz = np.int32(0)
    for j in range(w0.size):
        d = w1[j] - w0[j]
        out[j] = d
        e += d * d
        w += w0[j] * w0[j]
        nz += np.int32(d != 0)
    return e, w, nz


@_jit
def delta_sums(w0: Any, w1: Any, out: Any, row_e: Any) -> Any:
    """out = w1 - w0 (C-ordered float32 (r, k) arrays; out flat), with the squared norms of the
    delta and of w0 and the number of changed entries (NaN counts as changed); each row's delta
    energy into row_e (float64). Returns (delta_norm2, base_norm2, changed)."""
    r, k = w0.shape
    f0, f1 = w0.reshape(-1), w1.reshape(-1)
    dn2 = wn2 = 0.0
    nz = 0
    for i in range(r):
        e = 0.0
        for j0 in range(i * k, i * k + k, SEGMENT):
            j1 = min(j0 + SEGMENT, i * k + k)
            a, b, n = segment_delta(f0[j0:j1], f1[j0:j1], out[j0:j1])
            e += a
            wn2 += b
            nz += n
        row_e[i] = e
        dn2 += e
    return dn2, wn2, nz


@_jit
def widen(raw: Any, out: Any, kind: int) -> None:
    """Stored bits (flat uint16) -> float32 bits (`out`, flat uint32): kind 1 bfloat16, 2 float16."""
    wide = out.view(np.float32)
    for j0 in range(0, raw.size, SEGMENT):
        j1 = min(j0 + SEGMENT, raw.size)
        if kind == 1:
            widen_bf16(raw[j0:j1], out[j0:j1])
        else:
            widen_f16(raw[j0:j1], out[j0:j1], wide[j0:j1])
