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


def _floats(c: Checkpoint) -> dict[str, TensorMeta]:
    return {n: m for n, m in c.tensors.items() if m.is_float and m.numel}


def pair_up(a: Checkpoint, b: Checkpoint) -> list[tuple[str, str]]:
    """The float tensors of two copies, paired by name (names.pair_tensors), then what is left by
    shape: a tensor one copy stores under another name is compared all the same."""
    p = pair_tensors(_floats(a), _floats(b))
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


def lone_tensors(c: Checkpoint, paired: set[str], digests: Digests | None) -> list[str]:
    """c's float tensors that the other copy has no counterpart for, less the aliases of a tensor
    c shares with it: a tied weight (lm_head beside the embeddings it is tied to) shares their
    storage in a torch file, while safetensors keeps one of the two; elsewhere its stored bytes are
    the shared tensor's (raw digests taken by the statistics pass)."""
    floats = _floats(c)

    def place(m: TensorMeta) -> tuple[Any, ...]:
        return m.path, m.offset, m.storage_offset, m.dtype, m.shape
    storage = {place(m) for n, m in floats.items() if n in paired}
    same = {digests.get((c.name, n)) for n in paired} - {None} if digests else set()
    return sorted(n for n, m in floats.items() if n not in paired and place(m) not in storage
                  and not (digests and digests.get((c.name, n)) in same))


def compare_copies(a: Checkpoint, b: Checkpoint, pairs: list[tuple[str, str]], seconds: float,
                   progress: Callable[[str], None], digests: Digests | None = None) -> Observation | None:
    """`pairs`: pair_up(a, b). `digests`: pairs stored in one dtype whose raw digests (both taken
    by the statistics pass) agree are the same without a read; only the others are read again, in
    b's file order. Copies that agree on every shared tensor but not on which tensors they hold are
    said (info): a loader of one uses a tensor that a loader of the other initialises or ignores."""
    only = {c.name: lone_tensors(c, {p[i] for p in pairs}, digests) for i, c in enumerate((a, b))}
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
    lone = {file: names[:20] for file, names in only.items() if names}
    said = "; " + "; ".join(f"only {file} holds {len(only[file])} ({', '.join(names[:3])})"
                            for file, names in lone.items()) if lone else ""
    evidence: dict[str, Any] = {"files": [a.name, b.name], "compared": len(pairs)} \
        | ({"only_in": lone} if lone else {})
    if not differ:
        if not lone:
            return None
        return Observation(
            "weights/copies-hold-other-tensors", Severity.INFO,
            f"{a.name} and {b.name} agree on all {len(pairs)} shared tensors{said}: a loader of one copy "
            "uses a tensor that a loader of the other initialises or ignores (old checkpoints keep "
            "buffers such as GPT-2's attn.bias that newer saves leave out); each copy was scanned on its own",
            next(iter(lone.values()))[0], evidence)
    differ.sort(key=lambda d: d["tensor"])
    return Observation(
        "weights/inconsistent-copies", Severity.HIGH,
        f"{a.name} and {b.name} are two copies of one model that disagree in {len(differ)} of "
        f"{len(pairs)} shared tensors ({', '.join(d['tensor'] for d in differ[:3])}){said}: which one "
        "loads depends on the loader, so scanning one does not vouch for the other",
        differ[0]["tensor"],
        evidence | {"differ": len(differ), "read_again": len(todo), "tensors": differ[:20]})


def inconsistent_copies(ckpts: list[Checkpoint], seconds: float,
                        progress: Callable[[str], None] = lambda msg: None,
                        digests: Digests | None = None) -> list[tuple[str, Observation]]:
    """Every checkpoint of a folder against the first (safetensors first): (file, observation)."""
    out: list[tuple[str, Observation]] = []
    for group in folders_with_copies(ckpts):
        for other in group[1:]:
            pairs = pair_up(group[0], other)
            if len(pairs) * 2 < min(len(group[0].tensors), len(other.tensors)):
                continue   # not two copies of one model (e.g. a model and its separate adapter)
            hit = compare_copies(group[0], other, pairs, seconds, progress, digests)
            if hit is not None:
                out.append((other.name, hit))
    return out
