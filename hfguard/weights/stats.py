"""Per-tensor statistics, written once against numpy or torch (CPU or CUDA) as the array module.

The moments are summed chunk by chunk around a shift near the mean: each chunk stays in cache for
all its passes (speed) and the shift keeps fourth moments from cancelling (precision).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hfguard.weights import compiled as compiled_sums
from hfguard.weights.tensors import Widening


@dataclass(frozen=True)
class Backend:
    name: str           # "numba" | "numpy" | "torch-cpu" | "cuda"
    xp: Any             # the array module: numpy or torch
    chunk: int          # elements per chunk for the moment passes

    @property
    def compiled(self) -> bool:
        """numpy arrays whose elementwise passes run as hfguard.weights.compiled's loops (numba)."""
        return self.name == "numba"

    def put(self, a: Any) -> Any:
        if self.xp is np or not isinstance(a, np.ndarray):   # already on the backend (device feed)
            return a
        t = self.xp.from_numpy(a if a.flags.writeable else a.copy())   # torch wants writable memory
        return t.to("cuda", non_blocking=True) if self.name == "cuda" else t

    def empty(self, n: int) -> Any:
        if self.xp is np:
            return np.empty(n, dtype=np.float32)
        return self.xp.empty(n, dtype=self.xp.float32, device="cuda" if self.name == "cuda" else "cpu")

    def host(self, x: Any) -> np.ndarray:
        return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()

    def to64(self, x: Any) -> Any:
        return x.astype(np.float64) if self.xp is np else x.double()


def backend_for(device: str = "auto", weight_bytes: int | None = None) -> Backend:
    """`auto`: CUDA through torch when present, else the CPU. `cpu`: numpy with the compiled block
    sums where numba is installed and the scan reads `weight_bytes` >= compiled.MIN_BYTES (None:
    unknown, compiled). `numpy` (numpy alone) and `torch-cpu` exist for equality tests and benches."""
    big = weight_bytes is None or weight_bytes >= compiled_sums.MIN_BYTES
    if device == "auto" and not _nvidia_driver_present():
        return _cpu_backend(big)   # no GPU here: spare the seconds of importing torch
    if device in ("auto", "cuda", "torch-cpu"):
        try:
            import torch
        except ImportError:
            if device != "auto":
                raise RuntimeError(f"--device {device} needs torch, which is not installed") from None
            return _cpu_backend()
        if device == "torch-cpu":
            return Backend("torch-cpu", torch, 1 << 22)
        if torch.cuda.is_available():
            return Backend("cuda", torch, 1 << 28)
        if device == "cuda":
            raise RuntimeError("--device cuda: torch sees no CUDA device")
    elif device == "numpy":
        return _cpu_backend(compiled=False)
    elif device != "cpu":
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda")
    return _cpu_backend(big)


def _cpu_backend(compiled: bool = True) -> Backend:
    # 2 MiB blocks: per-call overhead falls 4x against 512 KiB ones, and a block and its square
    # still sit in L2/L3 for the seven numpy passes (2.95 -> 4.35 GB/s for a 2816x1024 matrix)
    if compiled and compiled_sums.load() is not None:
        return Backend("numba", np, 1 << 19)
    return Backend("numpy", np, 1 << 19)


def _nvidia_driver_present() -> bool:
    import os

    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


# each row block of a 2-D tensor, its first row's index, and its rows' float64 sums of squares or None
EachRows = Callable[[np.ndarray, int, "np.ndarray | None"], None]


def tensor_stats(arr: np.ndarray, be: Backend, *, tail_k: float = 6.0, spectral_max: int = 1 << 18,
                 tick: Callable[[], None] = lambda: None, widening: Widening | None = None,
                 each_rows: EachRows | None = None) -> dict[str, Any]:
    """Statistics of one tensor (float32, possibly a read-only map of the file); numbers only, so
    both backends compare equal. 2-D tensors get row and spectral statistics too.
    `widening`: `arr` is its buffer, widened block by block as the pass walks it (numpy only: the
    block is then in cache; a compiled backend widens bfloat16 and float16 in its own loop); `each_rows(block,
    first_row, row_sq)`: sees every row block of a 2-D tensor once while it is in cache, with its
    rows' sums of squares in float64 where the compiled sums took them (else None)."""
    x = be.put(arr)
    rows2d = x.ndim == 2 and min(x.shape) >= 2
    if widening is not None:
        widening.upto(4096)   # what _shift_for samples
    with np.errstate(invalid="ignore", over="ignore"):   # inf - inf in a chunk sum is expected
        st, rows = _fused_pass(x if rows2d else x.reshape(1, -1), be, tail_k, tick, rows2d, widening,
                               each_rows if rows2d else None)
    if widening is not None:
        widening.upto(int(arr.size))
    if rows is not None:
        st.update(_row_summary(x, be, *rows, tick))
        st.update(_spectral_budgeted(x, be, rows[0], spectral_max, st["absmax"]))
    return st


def _blocks(x: Any, chunk: int) -> Any:
    """Row blocks of about `chunk` elements, in order (a single long row is split into flat pieces)."""
    rows, cols = int(x.shape[0]), int(x.shape[1])
    if rows == 1:
        flat = x.reshape(-1)
        for i in range(0, cols, chunk):
            yield flat[i:i + chunk].reshape(1, -1)
        return
    step = max(1, chunk // max(cols, 1))
    for i in range(0, rows, step):
        yield x[i:i + step]


def _shift_for(x: Any, xp: Any) -> float:
    """A shift near the mean where the mean is large next to the spread; 0.0 for the usual
    zero-centred weights (cancellation is then at most (mean/std)^4 = 1e-4 of the fourth moment)."""
    flat = x.reshape(-1)
    sample = flat[: min(int(flat.shape[0]), 4096)]
    sample = sample[xp.isfinite(sample)]
    if not sample.shape[0]:
        return 0.0
    shift = float(sample.mean())
    return 0.0 if abs(shift) <= 0.1 * float(sample.std()) else shift


def _moment_stats(sums: tuple[float, float, float, float], finite: int, lo: float, hi: float,
                  nonzero: int, shift: float) -> dict[str, Any]:
    """Statistics from the sums of d, d^2, d^3, d^4 about `shift` over the finite entries."""
    if not finite:
        return {"mean": None, "std": None, "absmax": None, "kurtosis": None, "tail_share": None,
                "zero_share": None}
    m1, m2, m3, m4 = (s / finite for s in sums)
    var = max(m2 - m1 * m1, 0.0)
    mu4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1 ** 4   # central, from moments about the shift
    return {"mean": shift + m1, "std": math.sqrt(var), "absmax": max(abs(hi), abs(lo)),
            "kurtosis": mu4 / (var * var) if var > 0 else None,
            "zero_share": 1 - nonzero / finite}


def _fused_pass(x: Any, be: Backend, tail_k: float, tick: Callable[[], None], rows2d: bool,
                widening: Widening | None = None,
                each_rows: EachRows | None = None,
                ) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """Moments, extremes, zeros, and (2-D) row norms and non-zero counts, each block read once
    while it sits in cache. Moments are taken about `_shift_for`; for the usual
    zero-centred weights the shift is 0 and the subtraction pass is skipped. A compiled backend
    takes all of a block's sums in one loop (`compiled.block_sums`); numpy's go through BLAS
    products with a ones vector (several times faster than numpy's pairwise sum)."""
    xp = be.xp
    n = int(x.shape[0]) * int(x.shape[1])
    shift = _shift_for(x, xp)
    s1 = s2 = s3 = s4 = 0.0
    hi, lo, nonzero, nan, inf, finite = -math.inf, math.inf, 0, 0, 0, 0
    sq: list[np.ndarray] = []
    nnz: list[np.ndarray] = []
    # per block: bounds (hi, lo) of its finite entries, for the tail pass; blocks holding NaN/Inf;
    # with shift 0, each block's largest square (the extremes are then taken from the top ones)
    spans: list[tuple[float, float]] = []
    odd: set[int] = set()
    squares: dict[int, float] = {}
    ones = dbuf = d2buf = None
    first = 0
    stop = 0
    for b, blk in enumerate(_blocks(x, be.chunk)):
        tick()
        r, k = int(blk.shape[0]), int(blk.shape[1])
        m = r * k
        start, stop = stop, stop + m   # the block's entries in flat order
        # bfloat16 and float16 blocks are widened by the compiled loop as it sums them
        raw = widening.raw[start:stop] if be.compiled and widening is not None \
            and widening.dtype in compiled_sums.WIDENS and widening.done < stop else None
        if widening is not None and raw is None:
            widening.upto(stop)
        got = None
        if be.compiled:   # every sum below in one compiled loop (None: a non-finite sum, see below)
            row_sq, row_nz = np.empty(r, np.float64), np.empty(r, np.int64)
            got = compiled_sums.block_sums(blk, shift, row_sq, row_nz, raw,
                                           widening.dtype if widening is not None else "float32")
        if raw is not None and widening is not None:
            if got is not None:
                widening.done = max(widening.done, stop)
            widening.upto(stop)   # where it stopped short, for the numpy path below
        if each_rows is not None:
            each_rows(blk, first, row_sq if got is not None else None)
            first += r
        if got is not None:
            t1, t2, t3, t4, bhi, blo = got
            s1, s2, s3, s4 = s1 + t1, s2 + t2, s3 + t3, s4 + t4
            hi, lo = max(hi, bhi), min(lo, blo)
            spans.append((bhi, blo))
            finite += m
            nonzero += int(row_nz.sum())
            if rows2d:
                sq.append(row_sq)
                nnz.append(row_nz)
            continue
        if ones is None or int(ones.shape[0]) < k:
            ones = be.put(np.ones(k, dtype=np.float32))
        if dbuf is None or d2buf is None or int(d2buf.shape[0]) < m:  # set together
            dbuf, d2buf = be.empty(m), be.empty(m)
        one, c = ones[:k], blk.reshape(-1)
        d = c
        if shift:
            d = dbuf[:m]
            xp.subtract(c, shift, out=d)
        t1 = float((d.reshape(r, k) @ one).sum())
        if not math.isfinite(t1):   # a finite sum proves every entry finite
            nan += int(xp.isnan(c).sum())
            inf += int(xp.isinf(c).sum())
            rows2d = False          # row and spectral statistics need finite numbers
            odd.add(b)
            c = c[xp.isfinite(c)]
            if not c.shape[0]:
                spans.append((-math.inf, math.inf))
                continue
            d = c - shift
            d2 = d * d
            s1, s2 = s1 + float(d.sum()), s2 + float(d2.sum())
            s3, s4 = s3 + float((d2 * d).sum()), s4 + float((d2 * d2).sum())
            bhi, blo = float(c.max()), float(c.min())
            spans.append((bhi, blo))
            hi, lo = max(hi, bhi), min(lo, blo)
            finite += int(c.shape[0])
            nonzero += int(xp.count_nonzero(c))
            continue
        finite += m
        d2 = d2buf[:m]
        xp.multiply(d, d, out=d2)
        s1 += t1
        if rows2d and not shift:   # row norms come out of the second moment for free
            rs = d2.reshape(r, k) @ one
            s2 += float(rs.sum())
            sq.append(be.host(rs))
        else:
            s2 += float(xp.dot(d, d))
            if rows2d:
                sq.append(be.host(xp.einsum("ij,ij->i", blk, blk)))
        s3 += float(xp.dot(d2, d))
        s4 += float(xp.dot(d2, d2))
        if shift:
            bhi, blo = float(c.max()), float(c.min())
            hi, lo = max(hi, bhi), min(lo, blo)
            maybe_zero = blo <= 0.0 <= bhi
        else:   # d2 = c^2: its extremes bound |c| and test for zeros (one pass fewer than max, min, zero)
            squares[b] = float(d2.max())
            bhi = math.sqrt(squares[b]) * (1 + 1e-6)    # a bound: the square was rounded
            blo, maybe_zero = -bhi, float(d2.min()) == 0.0
        spans.append((bhi, blo))
        # counting non-zeros is the slowest pass: only where a zero is possible at all
        if rows2d:
            nz = be.host(xp.count_nonzero(blk, 1)) if maybe_zero else np.full(r, k)
            nnz.append(nz)
            nonzero += int(nz.sum())
        else:
            nonzero += int(xp.count_nonzero(c)) if maybe_zero else m

    if squares:   # squaring is monotone in |c|: the largest |c| lies in a block with the top square
        top = max(squares.values())
        for b, blk in enumerate(_blocks(x, be.chunk)):
            if squares.get(b) == top:
                hi, lo = max(hi, float(blk.max())), min(lo, float(blk.min()))
    st: dict[str, Any] = {"n": n, "nan": nan, "inf": inf}
    st.update(_moment_stats((s1, s2, s3, s4), finite, lo, hi, nonzero, shift))
    if finite:
        mean, cut = st["mean"], tail_k * st["std"]
        beyond = [sp[0] > mean + cut or sp[1] < mean - cut for sp in spans]
        tail = 0
        if st["std"] > 0 and any(beyond):   # else none lies beyond: no pass
            # only the blocks that may hold an entry beyond the cut are read (and, as before,
            # those holding NaN/Inf)
            for b, blk in enumerate(_blocks(x, be.chunk)):
                if beyond[b] or b in odd:
                    tick()
                    c = blk.reshape(-1)
                    tail += int(xp.count_nonzero(c < mean - cut)) + int(xp.count_nonzero(c > mean + cut))
        st["tail_share"] = tail / finite
    rows = (np.concatenate(sq), np.concatenate(nnz)) if rows2d and sq and finite else None
    return st, rows


def _row_summary(x: Any, be: Backend, sq: np.ndarray, nz: np.ndarray,
                 tick: Callable[[], None]) -> dict[str, Any]:
    norms = np.sqrt(sq.astype(np.float64))
    # float32 norms and the magnitudes of the first two entries only nominate candidates;
    # copies are then confirmed byte for byte
    dup = mirrored = 0
    # the 4096 longest chains of rows with norms within 1e-6 of their sorted neighbours, longest
    # first, their members flattened in that order (at most 2^20)
    order, _v, starts, ends = _chains(norms, 1e-6)
    lens = ends - starts + 1
    pick = np.argsort(-lens, kind="stable")[:4096]
    first, lens = starts[pick], lens[pick]
    within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)   # place in its chain
    idx = order[np.repeat(first, lens) + within][: 1 << 20]
    gid = np.repeat(np.arange(pick.size), lens)[: 1 << 20]
    buckets: list[list[int]] = []
    if idx.size >= 2:
        # one gather for every candidate's first two entries (one device round trip, not one per
        # group); candidates sharing a group and |first two entries| form a bucket, found by one
        # stable sort on (group, the two magnitudes' bits), members in candidate order
        sel = idx if be.xp is np else idx.tolist()
        heads = np.ascontiguousarray(np.abs(be.host(x[sel, :2])), np.float32).view(np.uint64).reshape(-1)
        by_key = np.lexsort((heads, gid))
        g_s, h_s = gid[by_key], heads[by_key]
        cut = np.flatnonzero(np.concatenate(([True], (g_s[1:] != g_s[:-1]) | (h_s[1:] != h_s[:-1]))))
        buckets = [idx[by_key[a:b]].tolist() for a, b in zip(cut, np.append(cut[1:], idx.size), strict=True)
                   if b - a >= 2]
    for cand in buckets:
        tick()
        seen: set[bytes] = set()
        for r in be.host(x[cand[:4096]]):
            key = r.tobytes()
            if key in seen:
                dup += 1
            elif (-r).tobytes() in seen:
                mirrored += 1
            seen.add(key)
    return {"rows": int(x.shape[0]), "cols": int(x.shape[1]), "zero_rows": int((nz == 0).sum()),
            "single_nonzero_rows": int((nz == 1).sum()),
            "single_nonzero_idx": np.flatnonzero(nz == 1)[:16].tolist(),
            "dup_rows": dup, "mirrored_rows": mirrored}


def _spectral_budgeted(x: Any, be: Backend, sq: np.ndarray, spectral_max: int,
                       absmax: float | None = None) -> dict[str, Any]:
    """Spectral summary of the whole matrix, or of every k-th row when it is larger than the budget
    (the same rows for same-shaped siblings, so their numbers stay comparable)."""
    rows, cols = int(x.shape[0]), int(x.shape[1])
    step = max(1, math.ceil(rows * cols / max(spectral_max, 1)))
    if step > 1 and rows // step < 2:
        return {}
    sub = x if step == 1 else x[::step]
    if step > 1:
        sub = sub.copy() if be.xp is np else sub.contiguous()
    fro2 = float(sq[::step].astype(np.float64).sum())
    if absmax is not None and absmax > 1e12:   # W^T W W q would overflow float32: measure W/absmax
        out = _spectral(sub / absmax, be, fro2 / absmax ** 2)
        out["sigma"] = [s * absmax for s in out["sigma"]]
    else:
        out = _spectral(sub, be, fro2)
    if step > 1:
        out["spectral_row_step"] = step
    return out


def _chains(norms: np.ndarray, rel_tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by norm (`order`, norms `v`) and the chains of sorted neighbours within
    rel_tol of each other, zero rows excluded: chain i is order[starts[i]..ends[i]] inclusive."""
    order = np.argsort(norms, kind="stable")
    v = norms[order].astype(np.float64)
    close = np.diff(v) <= rel_tol * v[1:]
    close &= v[1:] > 0
    # runs of True in `close` join rows j..k of the sorted order
    edges = np.diff(np.concatenate(([0], close.astype(np.int8), [0])))
    return order, v, np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _spectral(x: Any, be: Backend, fro2: float, k: int = 4, iters: int = 3) -> dict[str, Any]:
    """Top singular values by subspace iteration on W^T W (one orthonormalisation per round: the
    small QRs, not the products, were most of the cost); stable rank = ||W||_F^2 / sigma_1^2."""
    xp = be.xp
    k = min(k, int(x.shape[0]), int(x.shape[1]))
    q = be.put(_start_block(int(x.shape[1]), k))
    for _ in range(iters):
        q, _r = xp.linalg.qr(_gram_times(x, q, be))
    sv = be.host(xp.linalg.svd(x @ q, full_matrices=False)[1]).astype(np.float64)
    s1 = float(sv[0]) if sv.size else 0.0
    return {"sigma": [float(s) for s in sv], "stable_rank": fro2 / (s1 * s1) if s1 > 0 else None}


def _gram_times(x: Any, q: Any, be: Backend) -> Any:
    """x^T (x q). On the CPU a matrix larger than a few blocks is walked in ~2 MiB row blocks, each
    multiplied twice while in cache: one read of x per round, not two (a diff's full-size deltas:
    its spectral estimate was a third of a fine-tune diff's time, measured)."""
    rows, cols = int(x.shape[0]), int(x.shape[1])
    step = max(1, be.chunk // max(cols, 1))
    if be.xp is not np or rows <= 4 * step:
        return x.T @ (x @ q)
    acc = np.zeros((cols, int(q.shape[1])), np.float32)
    for i in range(0, rows, step):
        b = x[i:i + step]
        acc += b.T @ (b @ q)
    return acc


@functools.lru_cache(maxsize=64)
def _start_block(cols: int, k: int) -> np.ndarray:
    """The same random start for every matrix of a width (siblings stay comparable)."""
    block = np.random.default_rng(0).standard_normal((cols, k)).astype(np.float32)
    block.flags.writeable = False
    return block
