"""Per-tensor statistics, written once against numpy or torch (CPU or CUDA) as the array module.

The moments are summed chunk by chunk around a shift near the mean: each chunk stays in cache for
all its passes (speed) and the shift keeps fourth moments from cancelling (precision).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Backend:
    name: str           # "numpy" | "torch-cpu" | "cuda"
    xp: Any             # the array module: numpy or torch
    chunk: int          # elements per chunk for the moment passes

    def put(self, a: np.ndarray) -> Any:
        if self.xp is np:
            return a
        t = self.xp.from_numpy(a)
        return t.to("cuda", non_blocking=True) if self.name == "cuda" else t

    def host(self, x: Any) -> np.ndarray:
        return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()

    def to64(self, x: Any) -> Any:
        return x.astype(np.float64) if self.xp is np else x.double()


def backend_for(device: str = "auto") -> Backend:
    """`auto`: CUDA through torch when present, else numpy. `torch-cpu` exists for equality tests."""
    if device in ("auto", "cuda", "torch-cpu"):
        try:
            import torch
        except ImportError:
            if device != "auto":
                raise RuntimeError(f"--device {device} needs torch, which is not installed") from None
            return Backend("numpy", np, 1 << 16)
        if device == "torch-cpu":
            return Backend("torch-cpu", torch, 1 << 16)
        if torch.cuda.is_available():
            return Backend("cuda", torch, 1 << 28)
        if device == "cuda":
            raise RuntimeError("--device cuda: torch sees no CUDA device")
    elif device != "cpu":
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")
    return Backend("numpy", np, 1 << 16)


def tensor_stats(arr: np.ndarray, be: Backend, *, tail_k: float = 6.0, spectral_max: int = 4 << 20,
                 tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Statistics of one float32 tensor; numbers only, so both backends compare equal."""
    x = be.put(arr)
    flat = x.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):   # inf - inf in a chunk sum is expected
        st = _moments(flat, be, tail_k, tick)
    if x.ndim == 2 and min(x.shape) >= 2 and st["nan"] + st["inf"] == 0:
        st.update(_row_stats(x, be, tick))
        if x.shape[0] * x.shape[1] <= spectral_max:
            st.update(_spectral(x, be, st.pop("_fro2")))
    st.pop("_fro2", None)
    return st


def _moments(flat: Any, be: Backend, tail_k: float, tick: Callable[[], None]) -> dict[str, Any]:
    xp, n = be.xp, int(flat.shape[0])
    sample = flat[: min(n, 4096)]
    sample = sample[xp.isfinite(sample)]
    shift = float(sample.mean()) if sample.shape[0] else 0.0
    s1 = s2 = s3 = s4 = 0.0
    hi, lo, nonzero, nan, inf, finite = -math.inf, math.inf, 0, 0, 0, 0
    for i in range(0, n, be.chunk):
        tick()
        c = flat[i:i + be.chunk]
        d = c - shift
        t1 = float(d.sum())
        if not math.isfinite(t1):   # a finite sum proves every entry finite
            nan += int(xp.isnan(c).sum())
            inf += int(xp.isinf(c).sum())
            c = c[xp.isfinite(c)]
            if not c.shape[0]:
                continue
            d = c - shift
            t1 = float(d.sum())
        finite += int(c.shape[0])
        d2 = d * d
        s1 += t1
        s2 += float(d2.sum())
        s3 += float((d2 * d).sum())
        s4 += float((d2 * d2).sum())
        hi, lo = max(hi, float(c.max())), min(lo, float(c.min()))
        nonzero += int(xp.count_nonzero(c))
    st: dict[str, Any] = {"n": n, "nan": nan, "inf": inf}
    if not finite:
        return {**st, "mean": None, "std": None, "absmax": None, "kurtosis": None,
                "tail_share": None, "zero_share": None, "_fro2": 0.0}
    m1, m2, m3, m4 = s1 / finite, s2 / finite, s3 / finite, s4 / finite
    var = max(m2 - m1 * m1, 0.0)
    mean, std = shift + m1, math.sqrt(var)
    # central fourth moment from moments about the shift (the shift sits near the mean: no cancellation)
    mu4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1 ** 4
    kurt = mu4 / (var * var) if var > 0 else None
    tail = 0
    if std > 0:
        cut = tail_k * std
        for i in range(0, n, be.chunk):
            tick()
            c = flat[i:i + be.chunk]
            tail += int((c > mean + cut).sum()) + int((c < mean - cut).sum())
    st.update(mean=mean, std=std, absmax=max(abs(hi), abs(lo)), min=lo, max=hi,
              kurtosis=kurt, tail_share=tail / finite, zero_share=1 - nonzero / finite,
              _fro2=s2 + 2 * shift * s1 + finite * shift * shift)
    return st


def _row_stats(x: Any, be: Backend, tick: Callable[[], None]) -> dict[str, Any]:
    xp = be.xp
    rows, cols = int(x.shape[0]), int(x.shape[1])
    step = max(1, (1 << 20) // cols)
    sq, nnz = [], []
    for i in range(0, rows, step):
        tick()
        blk = x[i:i + step]
        sq.append(be.host(xp.einsum("ij,ij->i", blk, blk)))
        nnz.append(be.host(xp.count_nonzero(blk, 1)))
    norms = np.sqrt(np.concatenate(sq).astype(np.float64))
    nz = np.concatenate(nnz)
    # float32 norms only nominate candidates; copies are then confirmed byte for byte
    groups = equal_norm_groups(norms, rel_tol=1e-6, strict=False)
    dup = mirrored = 0
    for g in groups[:4096]:
        tick()
        seen: set[bytes] = set()
        for r in be.host(x[g[:4096]]):
            key = r.tobytes()
            if key in seen:
                dup += 1
            elif (-r).tobytes() in seen:
                mirrored += 1
            seen.add(key)
    return {"rows": rows, "cols": cols, "zero_rows": int((nz == 0).sum()),
            "single_nonzero_rows": int((nz == 1).sum()),
            "single_nonzero_idx": np.flatnonzero(nz == 1)[:16].tolist(),
            "dup_rows": dup, "mirrored_rows": mirrored}


def equal_norm_groups(norms: np.ndarray, rel_tol: float = 1e-7, strict: bool = True) -> list[list[int]]:
    """Rows whose norms agree within rel_tol, zero rows excluded, largest groups first.

    Neighbours in sorted order are chained first; `strict` then splits chains so that a whole group
    spans at most rel_tol (a long chain of near neighbours is not one shared norm)."""
    order = np.argsort(norms, kind="stable")
    v = norms[order].astype(np.float64)
    close = np.diff(v) <= rel_tol * v[1:]
    close &= v[1:] > 0
    if not close.any():
        return []
    # runs of True in `close` join rows j..k of the sorted order
    edges = np.diff(np.concatenate(([0], close.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    groups: list[list[int]] = []
    for a, b in zip(starts, ends, strict=True):
        if not strict:
            groups.append(order[a:b + 1].tolist())
            continue
        lo = a
        for k in range(a + 1, b + 2):
            if k == b + 1 or v[k] - v[lo] > rel_tol * v[k]:
                if k - lo >= 2:
                    groups.append(order[lo:k].tolist())
                lo = k
    return sorted(groups, key=len, reverse=True)


def _spectral(x: Any, be: Backend, fro2: float, k: int = 4, iters: int = 4) -> dict[str, Any]:
    """Top singular values by block power iteration; stable rank = ||W||_F^2 / sigma_1^2."""
    xp = be.xp
    k = min(k, int(x.shape[0]), int(x.shape[1]))
    q = be.put(np.random.default_rng(0).standard_normal((int(x.shape[1]), k)).astype(np.float32))
    for _ in range(iters):
        q, _r = xp.linalg.qr(x @ q)
        q, _r = xp.linalg.qr(x.T @ q)
    sv = be.host(xp.linalg.svd(x @ q, full_matrices=False)[1]).astype(np.float64)
    s1 = float(sv[0]) if sv.size else 0.0
    return {"sigma": [float(s) for s in sv], "stable_rank": fro2 / (s1 * s1) if s1 > 0 else None}
