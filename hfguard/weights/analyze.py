"""One pass over a checkpoint: each tensor is read once, measured, and released; then the
cross-tensor evidence (sibling layers, trap neurons with their biases) is judged on small numbers.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from hfguard.budget import Budget
from hfguard.findings import Observation, Severity, plot_evidence
from hfguard.weights import layers, traps
from hfguard.weights.stats import Backend, tensor_stats
from hfguard.weights.tensors import Checkpoint, TensorMeta, load_tensor, widening

EMBEDDING = re.compile(r"(embed|wte|wpe|tok_embeddings|shared\.weight|lm_head|word_embeddings)", re.I)
_KEEP = ("n", "mean", "std", "absmax", "kurtosis", "tail_share", "zero_share", "nan", "inf",
         "stable_rank", "sigma", "dup_rows", "mirrored_rows", "single_nonzero_rows", "zero_rows")


@dataclass
class _Measured:
    """What one tensor leaves behind once it is released: numbers and small vectors."""

    meta: TensorMeta
    stats: dict[str, Any]
    hits: list[Observation]
    norms: np.ndarray | None = None
    dups: np.ndarray | None = None
    vector: np.ndarray | None = None
    firing: np.ndarray | None = None   # an up-projection's neurons' firing z (traps.firing_estimate)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """The passes are skinny (k=4) products and block reductions: memory-bound, where threads only
    add synchronisation (20x slower measured on a loaded 2-core machine). Limit BLAS and torch's
    CPU threads while we work; CUDA is unaffected."""
    import sys

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        from threadpoolctl import threadpool_limits
        limit: Any = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        limit = contextlib.nullcontext()
    try:
        if torch is not None:
            torch.set_num_threads(1)
        with limit:
            yield
    finally:
        if torch is not None and before is not None:
            torch.set_num_threads(before)


# called with each tensor the pass reads, as float32, from the worker that read it
OnTensor = Callable[[TensorMeta, np.ndarray], None]


def analyze_checkpoint(ckpt: Checkpoint, be: Backend, th: dict[str, Any], budget: Budget,
                       config: tuple[str, dict[str, Any]] | None,
                       on_tensor: OnTensor | None = None) -> tuple[list[Observation], dict[str, Any]]:
    """`on_tensor`: also given each tensor read (the base diff, so a shard is read once for both)."""
    with single_threaded_blas():
        return _analyze(ckpt, be, th, budget, config, on_tensor)


def _workers(be: Backend, th: dict[str, Any], biggest: int = 0, buffers: int = 2) -> int:
    """Tensors are measured on a thread pool (numpy's reductions and BLAS release the GIL), one
    thread per usable core; the GPU path stays on one thread (it queues work on one device).
    Each worker may hold ~2x the largest tensor (its buffer and the block temporaries, `biggest`
    float32 entries; `buffers` of them), so no more workers than half the available memory holds."""
    if be.name == "cuda":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = int(th.get("workers") or 0) or cores
    free = _available_memory()
    room = free // 2 // (buffers * 4 * biggest) if biggest and free else n
    return max(1, min(n, room, 64))


def _available_memory() -> int | None:
    """MemAvailable (free memory plus the page cache the kernel would give back), Linux only."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _analyze(ckpt: Checkpoint, be: Backend, th: dict[str, Any], budget: Budget,
             config: tuple[str, dict[str, Any]] | None,
             on_tensor: OnTensor | None) -> tuple[list[Observation], dict[str, Any]]:
    hits: list[Observation] = []
    stats: dict[str, dict[str, Any]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    norms: dict[str, np.ndarray] = {}
    vectors: dict[str, np.ndarray] = {}     # 1-D tensors, kept for the bias side of trap neurons
    dups: dict[str, np.ndarray] = {}      # per neuron: how many others point the same way
    firings: dict[str, np.ndarray] = {}
    dtypes: dict[str, int] = {}
    params = 0
    metas = ckpt.float_tensors()
    # tensors that are not float32 in place are widened into one buffer per worker, reused:
    # fresh pages for every tensor cost more than the widening itself. Memory: per worker one
    # tensor (mapped or widened) and its block temporaries
    biggest = max((m.numel for m in metas if not m.mapped_as_is), default=0)
    local = threading.local()

    def measure(meta: TensorMeta, arr: np.ndarray | None = None, x: Any = None) -> _Measured:
        """`arr`, `x`: the tensor on the host and on the backend when a device feed has them."""
        budget.tick(f"reading {meta.name}", item=meta.name)
        lazy = None
        if arr is None:
            if not meta.mapped_as_is and getattr(local, "scratch", None) is None:
                local.scratch = np.empty(biggest, np.float32)
            # widened block by block as the statistics pass reaches it (the block is then in cache)
            lazy = None if meta.mapped_as_is else widening(meta, local.scratch)
            arr = lazy.array if lazy is not None else load_tensor(
                meta, copy=False, out=None if meta.mapped_as_is else local.scratch)
        if on_tensor is not None:
            if lazy is not None:
                lazy.upto(meta.numel)   # the diff reads the whole tensor now
            on_tensor(meta, arr)
        rows = traps.neuron_rows(meta.name, arr)
        # neuron norms and sketch taken from the pass's row blocks (not for GPT-2's transposed rows)
        seen = traps.NeuronRows(*rows.shape) if rows is arr and x is None else None
        st = tensor_stats(arr if x is None else x, be, tail_k=th["tail-k"],
                          spectral_max=th["spectral-max-elements"],
                          tick=functools.partial(budget.tick, f"measuring {meta.name}"),
                          widening=lazy, each_rows=seen)
        out = _Measured(meta, {k: st[k] for k in _KEEP if k in st}, tensor_hits(meta.name, arr, st, th))
        if rows is not None:
            projected = None
            if x is not None:   # the costly products on the device: norms, and the projection
                xr = x if rows is arr else x.T   # neurons as rows, as on the host
                out.norms = be.host(be.xp.linalg.vector_norm(xr, dim=1, dtype=be.xp.float64))
                projected = be.host(xr @ be.put(traps.projection(int(xr.shape[1]))))
            elif seen is not None and seen.complete:
                out.norms, projected = seen.norms, seen.sketched
            else:
                out.norms = traps.row_norms(rows)   # computed once, shared with the search
            out.dups = traps.near_duplicate_counts(rows, th["trap-cosine"], th["trap-min-neurons"],
                                                   norms=out.norms, projected=projected)
            if lazy is not None:
                lazy.upto(meta.numel)
            out.firing = _firing(ckpt, meta, arr)
        if arr.ndim == 1 and arr.size <= 1 << 20:
            out.vector = np.array(arr)   # a copy: arr is a map of the file or a reused buffer
        return out

    # a diff on the way holds two more per worker: the base's tensor and the delta
    workers = _workers(be, th, max((m.numel for m in metas), default=0), 2 if on_tensor is None else 4)
    if be.xp is not np:   # torch (CUDA; torch-cpu in tests): pinned batches, overlapped copies
        from hfguard.weights.feed import device_feed

        measured: Iterator[_Measured] = (measure(m, a, x) for m, a, x in device_feed(metas, be))
        workers = 1
    elif workers == 1:
        measured = map(measure, metas)
    else:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="hfguard-weights")
        measured = pool.map(measure, metas)   # results in file order; the first error propagates
    try:
        for m in measured:
            name = m.meta.name
            hits += m.hits
            if m.norms is not None:
                norms[name] = m.norms
            if m.dups is not None:
                dups[name] = m.dups
            if m.firing is not None:
                firings[name] = m.firing
            if m.vector is not None:
                vectors[name] = m.vector
            stats[name] = m.stats
            shapes[name] = m.meta.shape
            dtypes[m.meta.dtype] = dtypes.get(m.meta.dtype, 0) + 1
            params += m.meta.numel
    finally:
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    for name, nn in norms.items():
        bias = vectors.get(traps.bias_name(name))
        hits += traps.trap_neurons(name, nn, bias, min_group=th["trap-min-neurons"],
                                   norm_tol=th["trap-norm-tol"], bias_z=th["trap-bias-z"],
                                   lone_bias_z=th["lone-bias-z"], dup_counts=dups.get(name),
                                   cos=th["trap-cosine"], fire_z=th["trap-fire-z"],
                                   firing=firings.get(name), rare_fire_z=th["rare-fire-z"])
    scores = layers.sibling_scores(stats, shapes, th["min-siblings"])
    hits += sibling_hits(scores, stats, th)
    if config is not None:
        hits += traps.activation_hits(config[1], config[0])
    summary = {"tensors": len(stats), "parameters": params, "dtypes": dtypes, "backend": be.name,
               "skipped_non_float": len(ckpt.tensors) - len(stats)}
    blocks, worst = layers.layer_profile(scores)
    if blocks:
        summary["plot"] = plot_evidence(
            "bar", f"{ckpt.name}: largest robust z per layer (vs sibling layers)",
            [{"name": "max |z| over tensors and features", "x": [f"layer {b}" for b in blocks], "y": worst}],
            x_label="layer", y_label="robust z", threshold=float(th["robust-z"]))
    return hits, summary


def _firing(ckpt: Checkpoint, meta: TensorMeta, w: np.ndarray) -> np.ndarray | None:
    """The up-projection's neurons' firing z through the norm that feeds it (traps.firing_estimate),
    or None: no bias, no such norm found, shapes that do not fit, or a part in another remote shard
    (fetching it here would break the pass's shard order; bias / ||w|| is used then)."""
    bias = ckpt.tensors.get(traps.bias_name(meta.name))
    norm = traps.pre_mlp_norm(meta.name, ckpt.tensors)
    if bias is None or norm is None:
        return None
    parts = [bias, ckpt.tensors[norm[0]], *([ckpt.tensors[norm[1]]] if norm[1] else [])]
    if any(p.shard is not None and p.shard is not meta.shard for p in parts):
        return None
    neurons, inputs = (w.shape[1], w.shape[0]) if traps.CONV1D_UP.search(meta.name) else w.shape
    if any(p.numel != n for p, n in zip(parts, (neurons, inputs, inputs), strict=False)):
        return None
    b, gain, *shift = (load_tensor(p) for p in parts)
    return traps.firing_estimate(meta.name, w, b, gain, shift[0] if shift else None)


def tensor_hits(name: str, arr: np.ndarray, st: dict[str, Any], th: dict[str, Any]) -> list[Observation]:
    out: list[Observation] = []
    if st["nan"] or st["inf"]:
        out.append(Observation("weights/nan-inf", Severity.HIGH,
                               f"{name} holds {st['nan']} NaN and {st['inf']} Inf values",
                               name, {"nan": st["nan"], "inf": st["inf"], "n": st["n"]}))
    if (h := traps.zero_gains(name, arr, rel=th["silenced-gain-rel"],
                              min_count=th["silenced-gain-min"])) is not None:
        out.append(h)
    if st["nan"] + st["inf"] == 0 and (h := traps.huge_constants(
            name, arr, th["huge-constant-z"], th["huge-constant-abs"], st["absmax"])) is not None:
        out.append(h)
    embedding = bool(EMBEDDING.search(name))
    copies = st.get("dup_rows", 0) + st.get("mirrored_rows", 0)
    if copies >= th["duplicate-rows"]:
        out.append(Observation(
            "weights/duplicate-rows", Severity.INFO if embedding else Severity.MEDIUM,
            f"{name} has {st['dup_rows']} duplicated and {st['mirrored_rows']} sign-mirrored rows",
            name, {"dup_rows": st["dup_rows"], "mirrored_rows": st["mirrored_rows"], "rows": st["rows"]}))
    single = st.get("single_nonzero_rows", 0)
    if single >= th["single-nonzero-rows"] and st.get("cols", 0) >= 8:
        out.append(Observation(
            "weights/single-nonzero-rows", Severity.INFO if embedding else Severity.MEDIUM,
            f"{name} has {single} rows with exactly one non-zero entry (pass-through neurons)",
            name, {"rows": single, "indices": st["single_nonzero_idx"]}))
    return out


def sibling_hits(scores: list[dict[str, Any]], stats: dict[str, dict[str, Any]],
                 th: dict[str, Any]) -> list[Observation]:
    outliers = [s for s in scores if abs(s["z"]) >= th["robust-z"]]
    by_tensor: dict[str, list[dict[str, Any]]] = {}
    for o in outliers:
        by_tensor.setdefault(o["tensor"], []).append(o)
    out: list[Observation] = []
    for name, os_ in by_tensor.items():
        zmax = max(abs(o["z"]) for o in os_)
        feats = {o["feature"]: {k: o[k] for k in ("z", "value", "sibling_median")} for o in os_}
        rescaled = "log_std" in feats
        what = "rescaled" if rescaled else "unlike its siblings"
        detail = ", ".join(f"{f} z={v['z']:+.1f} ({v['value']:.4g} vs median {v['sibling_median']:.4g})"
                           for f, v in feats.items())
        out.append(Observation(
            "weights/layer-outlier", Severity.HIGH if zmax >= th["robust-z-high"] else Severity.MEDIUM,
            f"{name} is {what} ({os_[0]['siblings']} siblings of role {os_[0]['role']}): {detail}",
            name, {"role": os_[0]["role"], "siblings": os_[0]["siblings"], "features": feats,
                   "max_abs_z": zmax, "stats": stats[name]}))
    return out
