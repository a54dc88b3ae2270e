"""Two weight files of one model in one folder (model.safetensors beside pytorch_model.bin) must
hold the same weights: which one loads depends on the loader and its version, so an edited copy
next to a clean one is a way to pass a scan of the clean one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hfguard.findings import Observation, Severity
from hfguard.weights.shards import pair_meter, raw_digest, same_bytes
from hfguard.weights.stream import plan_reads
from hfguard.weights.tensors import Checkpoint, TensorMeta


def _tolerance(d0: str, d1: str) -> tuple[float, float]:
    """(rtol, atol) of a round trip through the narrower of two dtypes: one rounding (its machine
    epsilon) and flushed subnormals (its smallest normal). Same dtype: exact."""
    if d0 == d1:
        return 0.0, 0.0
    eps, tiny = [], []
    for d in (d0, d1):
        if d == "bfloat16":   # float32's exponent range, 8 significant bits
            eps.append(2.0 ** -7)
            tiny.append(float(np.finfo(np.float32).tiny))
        elif d in ("float16", "float32", "float64"):
            fi = np.finfo(d)
            eps.append(float(fi.eps))
            tiny.append(float(fi.tiny))
        else:   # float8: two or three mantissa bits
            eps.append(0.25)
            tiny.append(2.0 ** -6)
    return max(eps), max(tiny)


def _keyed(ckpt: Checkpoint, strip: bool) -> dict[str, str]:
    # `bert.encoder...` in an old .bin vs `encoder...` in a newer safetensors export
    return {(n.split(".", 1)[-1] if strip else n): n
            for n, m in ckpt.tensors.items() if m.is_float and m.numel}


def pair_up(a: Checkpoint, b: Checkpoint) -> list[tuple[str, str]]:
    best: list[tuple[str, str]] = []
    for sa in (False, True):
        for sb in (False, True):
            ka, kb = _keyed(a, sa), _keyed(b, sb)
            common = [(ka[k], kb[k]) for k in sorted(set(ka) & set(kb))]
            if len(common) > len(best):
                best = common
    return best


# (checkpoint name, tensor name) -> shards.raw_digest, taken by the statistics pass
Digests = dict[tuple[str, str], bytes | None]


def folders_with_copies(ckpts: list[Checkpoint]) -> list[list[Checkpoint]]:
    """The folders holding more than one checkpoint, each group safetensors first."""
    by_dir: dict[str, list[Checkpoint]] = {}
    for c in ckpts:
        by_dir.setdefault(c.directory, []).append(c)
    return [sorted(g, key=lambda c: (c.kind != "safetensors", c.name)) for g in by_dir.values() if len(g) > 1]


def digest_recorder(ckpt: Checkpoint, digests: Digests) -> Callable[[TensorMeta, Any], None]:
    """An on_tensor feed for the statistics pass that keeps each tensor's raw digest."""
    def record(meta: TensorMeta, _values: Any) -> None:
        digests[(ckpt.name, meta.name)] = raw_digest(meta)
    return record


def compare_copies(a: Checkpoint, b: Checkpoint, seconds: float, progress: Callable[[str], None],
                   digests: Digests | None = None) -> Observation | None:
    """`digests`: pairs stored in one dtype whose raw digests (both taken by the statistics pass)
    agree are the same without a read; only the others are read again, in b's file order."""
    pairs = pair_up(a, b)
    differ: list[dict[str, Any]] = []
    todo: list[tuple[TensorMeta, TensorMeta]] = []
    for na, nb in pairs:
        ma, mb = a.tensors[na], b.tensors[nb]
        if ma.shape != mb.shape:
            differ.append({"tensor": na, "why": f"shape {list(ma.shape)} vs {list(mb.shape)}"})
        elif not (digests and ma.dtype == mb.dtype
                  and digests.get((a.name, na)) is not None
                  and digests.get((a.name, na)) == digests.get((b.name, nb))):
            todo.append((ma, mb))
    todo.sort(key=lambda p: (str(p[1].path), p[1].offset))   # shard by shard
    budget = pair_meter(f"weights: {b.name} vs {a.name}", todo, seconds, progress)
    plan_reads(m for pair in todo for m in pair)
    for ma, mb in todo:
        budget.tick(f"comparing {mb.name}", item=mb.name)
        if same_bytes(ma, mb):
            continue
        wa, wb = a.load(ma.name, copy=False), b.load(mb.name, copy=False)
        rtol, atol = _tolerance(ma.dtype, mb.dtype)
        if rtol == 0.0:
            same = np.array_equal(wa, wb, equal_nan=True)
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                same = bool(np.allclose(wa, wb, rtol=rtol, atol=atol, equal_nan=True))
        if not same:
            d = np.abs(wa.astype(np.float64) - wb)
            rel = float(np.sqrt(np.nansum(d * d)) / max(float(np.linalg.norm(wa.astype(np.float64))), 1e-30))
            differ.append({"tensor": ma.name, "relative_difference": float(f"{rel:.4g}")})
        del wa, wb
    budget.finish()
    if not differ:
        return None
    differ.sort(key=lambda d: d["tensor"])
    return Observation(
        "weights/inconsistent-copies", Severity.HIGH,
        f"{a.name} and {b.name} are two copies of one model that disagree in {len(differ)} of "
        f"{len(pairs)} shared tensors ({', '.join(d['tensor'] for d in differ[:3])}): which one loads "
        "depends on the loader, so scanning one does not vouch for the other",
        differ[0]["tensor"], {"files": [a.name, b.name], "compared": len(pairs), "differ": len(differ),
                              "read_again": len(todo), "tensors": differ[:20]})


def inconsistent_copies(ckpts: list[Checkpoint], seconds: float,
                        progress: Callable[[str], None] = lambda msg: None,
                        digests: Digests | None = None) -> list[tuple[str, Observation]]:
    """Every checkpoint of a folder against the first (safetensors first): (file, observation)."""
    out: list[tuple[str, Observation]] = []
    for group in folders_with_copies(ckpts):
        for other in group[1:]:
            if len(pair_up(group[0], other)) * 2 < min(len(group[0].tensors), len(other.tensors)):
                continue   # not two copies of one model (e.g. a model and its separate adapter)
            hit = compare_copies(group[0], other, seconds, progress, digests)
            if hit is not None:
                out.append((other.name, hit))
    return out
