"""Two weight files of one model in one folder (model.safetensors beside pytorch_model.bin) must
hold the same weights: which one loads depends on the loader and its version, so an edited copy
next to a clean one is a way to pass a scan of the clean one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hfguard.findings import Observation, Severity
from hfguard.weights.names import agree, pair_tensors, stored_alike
from hfguard.weights.shards import pair_meter, raw_digest, same_bytes
from hfguard.weights.stream import plan_reads
from hfguard.weights.tensors import Checkpoint, TensorMeta


def pair_up(a: Checkpoint, b: Checkpoint) -> list[tuple[str, str]]:
    """The float tensors of two copies, paired by name (names.pair_tensors), then what is left by
    shape: a tensor one copy stores under another name is compared all the same."""
    p = pair_tensors(*({n: m for n, m in c.tensors.items() if m.is_float and m.numel} for c in (a, b)))
    return p.named + p.by_shape


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
            differ.append({"tensor": na, "why": f"shape {list(ma.shape)} vs {list(mb.shape)}",
                           **({"stored_as": nb} if nb != na else {})})
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
        quantized = ma.scale is not None or mb.scale is not None
        same = stored_alike(ma, mb, wa, wb) or stored_alike(mb, ma, wb, wa) if quantized else \
            agree(wa, wb, ma.dtype, mb.dtype)
        if not same:
            d = np.abs(wa.astype(np.float64) - wb)
            rel = float(np.sqrt(np.nansum(d * d)) / max(float(np.linalg.norm(wa.astype(np.float64))), 1e-30))
            differ.append({"tensor": ma.name, "relative_difference": float(f"{rel:.4g}"),
                           **({"stored_as": mb.name} if mb.name != ma.name else {})})
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
