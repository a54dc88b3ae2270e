"""Streaming two checkpoints against each other, shard by shard.

A checkpoint (tensors.Checkpoint) already joins its shards by tensor name, so a candidate split in
40 shards and a base in one file (or split differently) pair up by name. What this module adds is
how the pairs are read: in the candidate's file order (shard by shard, offset by offset: each shard
is read sequentially, and the base too where both keep the usual tensor order), each tensor of each
side once, and identical tensors decided on their raw bytes in fixed-size chunks, so memory stays
one chunk for the tensors a derivative leaves untouched (usually most) and one tensor pair for the
others, never a shard or the model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from hfguard.checks import Check
from hfguard.findings import Finding, Observation, Severity
from hfguard.weights.progress import ByteMeter, Work, tensor_bytes
from hfguard.weights.tensors import Checkpoint, TensorMeta, checkpoints_of, map_bytes

CHUNK = 16 << 20   # bytes compared per step: big enough for memcmp speed, small against any tensor
SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<k>\d{1,6})-of-(?P<n>\d{1,6})\.(?P<ext>safetensors|bin)$")


def model_checkpoints(target: Any, stream: Any = None) -> tuple[list[Checkpoint], list[tuple[str, str]]]:
    """checkpoints_of, with shards that no index claims (`model-00001-of-00004.safetensors` ...)
    joined into one checkpoint as well: loaders that glob *.safetensors (vLLM, TGI) load them as
    one model, so they are judged as one, not as N fragments each missing most of the model."""
    ckpts, failed = checkpoints_of(target, stream)
    groups: dict[tuple[str, str, str, str], list[tuple[int, Checkpoint]]] = {}
    out: list[Checkpoint] = []
    for c in ckpts:
        m = SHARD_NAME.match(c.name.rsplit("/", 1)[-1])
        if m is None or int(m["n"]) < 2:
            out.append(c)
            continue
        groups.setdefault((c.directory, m["stem"], m["n"], m["ext"]), []).append((int(m["k"]), c))
    for (folder, stem, n, ext), members in sorted(groups.items()):
        out.append(_joined(f"{folder}/{stem}-*-of-{n}.{ext}", int(n), sorted(members, key=lambda kc: kc[0])))
    return out, failed


def _joined(name: str, n: int, members: list[tuple[int, Checkpoint]]) -> Checkpoint:
    joined = Checkpoint(name=name, kind=members[0][1].kind)
    twice: dict[str, list[str]] = {}
    for _, c in members:
        joined.problems += c.problems
        for tname, meta in c.tensors.items():
            if tname in joined.tensors:   # the first shard's copy is examined; the other is named
                twice.setdefault(tname, [joined.tensors[tname].file]).append(meta.file)
            else:
                joined.tensors[tname] = meta
    missing = sorted(set(range(1, n + 1)) - {k for k, _ in members})
    if missing:
        joined.problems.append(Observation(
            "weights/missing-shard", Severity.MEDIUM,
            f"shards {', '.join(map(str, missing[:10]))} of {n} ({name}) are not in the target, and no "
            "index lists the shards", evidence={"missing": missing[:100], "shards": n}))
    if twice:
        first = next(iter(twice))
        joined.problems.append(Observation(
            "weights/duplicate-tensor", Severity.MEDIUM,
            f"{len(twice)} tensors are stored in more than one shard of {name} ({first}: "
            f"{', '.join(twice[first])}): which copy loads depends on the loader's order",
            first, {"tensors": dict(list(twice.items())[:20])}))
    return joined


def in_read_order(names: list[str], ckpt: Checkpoint) -> list[str]:
    """`names` ordered as `ckpt` lays them out on disk: shard by shard, offset by offset."""
    return sorted(names, key=lambda n: (str(ckpt.tensors[n].path), ckpt.tensors[n].offset, n))


def pair_meter(label: str, pairs: list[tuple[TensorMeta, TensorMeta]], seconds: float,
               progress: Callable[[str], None]) -> ByteMeter:
    """A meter over tensor pairs, keyed by the second (candidate) side's name, one unit per pair:
    both sides' bytes, shown under the candidate's shard."""
    return ByteMeter(label, seconds,
                     {b.name: Work(tensor_bytes(a) + tensor_bytes(b), b.file) for a, b in pairs}, progress,
                     streamed=any(m.shard is not None for pair in pairs for m in pair))


def checkpoint_meter(label: str, ckpt: Checkpoint, seconds: float, progress: Callable[[str], None],
                     base: dict[str, TensorMeta] | None = None) -> ByteMeter:
    """A meter over one pass through `ckpt`'s float tensors (the statistics pass). `base`: the base
    tensors diffed on the way, by the model's name: their bytes count with that tensor of the model, and
    the pass has the budget of both checks."""
    extra = base or {}
    return ByteMeter(label, seconds,
                     {m.name: Work(tensor_bytes(m) + (tensor_bytes(extra[m.name]) if m.name in extra else 0),
                                   m.file) for m in ckpt.float_tensors()},
                     progress, checks=1 if base is None else 2,
                     streamed=any(m.shard is not None for m in [*ckpt.float_tensors(), *extra.values()]))


_SHARD_REMEDIATION = {
    "weights/duplicate-tensor": "Keep one copy of each tensor (regenerate the shards); compare the copies.",
    "weights/missing-shard": "Provide every shard the index names (a partial download?), or fix the index.",
    "weights/index-mismatch": "Regenerate the index from the shards, and find out where the unlisted or "
                              "missing tensors came from before loading the model.",
}


def shard_findings(check: Check, problems: list[Observation], file: str) -> Iterator[Finding]:
    """A checkpoint's index problems. A missing shard is ERROR: its tensors were not examined (and
    a loader cannot load the model); an index that disagrees with its shards is a finding on what
    was read (a loader initialises a listed-but-absent tensor at random, and may load an unlisted one)."""
    missing = [p for p in problems if p.rule == "weights/missing-shard"]
    rest = [p for p in problems if p.rule != "weights/missing-shard"]
    yield from check.findings_from(missing, file=file, error=True, remediation=_SHARD_REMEDIATION.get)
    yield from check.findings_from(rest, file=file, remediation=_SHARD_REMEDIATION.get)


def _raw_span(meta: TensorMeta) -> tuple[int, int] | None:
    """(absolute offset, bytes) of the values when they are stored contiguously, in C order."""
    n = tensor_bytes(meta)
    if meta.stride is None:
        return meta.offset, n
    itemsize = n // meta.numel if meta.numel else 0
    expect, contiguous = 1, []
    for dim in reversed(meta.shape):
        contiguous.append(expect)
        expect *= dim
    start = meta.storage_offset * itemsize
    if tuple(reversed(contiguous)) != meta.stride or meta.storage_offset < 0 or start + n > meta.nbytes:
        return None
    return meta.offset + start, n


def same_bytes(a: TensorMeta, b: TensorMeta) -> bool:
    """True when both tensors hold bit-identical values in the same dtype and shape, decided
    chunk by chunk on the raw file bytes (no widening, no full-size temporaries). False means
    'not shown identical here': compare the values (a -0.0/+0.0 or NaN payload may differ)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    pa, pb = a.value_parts, b.value_parts   # a quantized weight's values depend on them too
    if len(pa) != len(pb) or (a.packed and a.packed.packing) != (b.packed and b.packed.packing) \
            or a.scale_factor != b.scale_factor \
            or not all(same_bytes(qa, qb) for qa, qb in zip(pa, pb, strict=True)):
        return False
    sa, sb = _raw_span(a), _raw_span(b)
    if sa is None or sb is None or sa[1] != sb[1]:
        return False
    for start in range(0, sa[1], CHUNK):
        n = min(CHUNK, sa[1] - start)
        ra, rb = map_bytes(a.data_path, sa[0] + start, n), map_bytes(b.data_path, sb[0] + start, n)
        words = np.uint64 if n % 8 == 0 else np.uint8
        if not np.array_equal(ra.view(words), rb.view(words)):
            return False
        del ra, rb   # unmapped before the next chunk
    return True


def raw_digest(meta: TensorMeta) -> bytes | None:
    """sha256 of a tensor's values as stored (raw file bytes, chunk by chunk), or None where they
    are not stored contiguously. Taken while the statistics pass has the tensor's shard, it lets
    two copies in one dtype be compared later without reading (or fetching) either again."""
    span = _raw_span(meta)
    if span is None:
        return None
    h = hashlib.sha256()
    for start in range(0, span[1], CHUNK):
        h.update(map_bytes(meta.data_path, span[0] + start, min(CHUNK, span[1] - start)).data)
    for part in meta.value_parts:   # a quantized weight's values depend on them too
        sub = raw_digest(part)
        if sub is None:
            return None
        h.update(sub)
    if meta.packed is not None:     # and on how its codes and zero points are read
        h.update(repr(meta.packed.packing).encode())
    if meta.scale_factor != 1.0:
        h.update(repr(meta.scale_factor).encode())
    return h.digest()


def equal_values(w0: np.ndarray, w1: np.ndarray) -> bool:
    """np.array_equal(equal_nan=True) in row blocks: its temporaries stay one block. The first
    block is small: a changed tensor (the usual reason to be here) is told after ~64K entries,
    not a 16 MiB block (array_equal with NaNs makes five passes over it: 16 ms per LLaMA-1B
    matrix, a third of a fine-tune diff's time, measured)."""
    if w0.shape != w1.shape:
        return False
    if w0.ndim == 0 or w0.size * w0.itemsize <= CHUNK:
        first = min(w0.size, 1 << 16)
        if not np.array_equal(w0.reshape(-1)[:first], w1.reshape(-1)[:first], equal_nan=True):
            return False
        return bool(np.array_equal(w0, w1, equal_nan=True))
    width = max(1, w0.size // w0.shape[0])
    step = max(1, CHUNK // (width * w0.itemsize))
    ends = [max(1, (1 << 16) // width)] + list(range(step, w0.shape[0], step)) + [w0.shape[0]]
    return all(np.array_equal(w0[a:b], w1[a:b], equal_nan=True)
               for a, b in zip([0] + ends[:-1], ends, strict=True) if b > a)
