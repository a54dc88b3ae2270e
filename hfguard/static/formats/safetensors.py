"""static.safetensors: validate a safetensors header without reading a single tensor byte.

A safetensors file is ``u64 little-endian N`` + ``N bytes of UTF-8 JSON`` + a data region that the
header's ``data_offsets`` must tile exactly (no overlaps, no holes, nothing past the end, nothing
left over). Loaders disagree on malformed headers (duplicate keys, NaN literals, overlaps), which is
how parser-differential and polyglot files hide payloads, so every deviation is a finding.

Also a target-level check of sharded checkpoints: ``*.index.json`` weight maps that point at missing
files or outside the repository.
"""

from __future__ import annotations

import json
import posixpath
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from hfguard import sniff as fmts
from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.problems import TooLarge, lfs_pointer_problem, load_json_bounded
from hfguard.target import Target, TargetFile

MAX_HEADER_BYTES = 100_000_000       # the reference implementation's own cap
MAX_INDEX_BYTES = 64 * 1024 * 1024
TAIL_SNIFF_BYTES = 1 << 20           # how much of unexplained trailing data we look at

# Bits per element (sub-byte float formats included), after the reference implementation.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
U64_MAX = (1 << 64) - 1
ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


@dataclass
class TensorEntry:
    name: str
    dtype: str
    shape: list[int]
    begin: int
    end: int


@dataclass
class Header:
    """What a well-formed-enough header says; `problems` lists everything wrong with it."""

    length: int
    file_size: int
    tensors: list[TensorEntry] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    covered: int = 0                     # data bytes tiled by tensors from offset 0
    problems: list[Observation] = field(default_factory=list)

    @property
    def data_start(self) -> int:
        return 8 + self.length


class _Strict:
    """json hooks: keep every key pair (duplicates) and refuse NaN/Infinity (serde rejects them)."""

    def __init__(self) -> None:
        self.duplicates: list[str] = []

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):  # rare: find which
            seen: set[str] = set()
            for k, _ in pairs:
                if k in seen:
                    self.duplicates.append(k)
                seen.add(k)
        return out

    @staticmethod
    def constant(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")


def read_header(fh: BinaryIO, file_size: int, max_header: int = MAX_HEADER_BYTES,
                budget: Budget | None = None) -> Header:
    """Parse and validate the header of an open safetensors stream. Reads 8 + N bytes at most
    (plus up to 1 MiB of unexplained trailing bytes, to recognise polyglots)."""
    fh.seek(0)
    prefix = fh.read(8)
    if len(prefix) < 8:
        header = Header(length=0, file_size=file_size)
        header.problems.append(Observation(
            "safetensors/truncated", Severity.HIGH,
            f"file is {file_size} bytes, shorter than the 8-byte header length",
            evidence={"size": file_size}))
        return header
    (n,) = struct.unpack("<Q", prefix)
    header = Header(length=n, file_size=file_size)
    ev = {"header_length": n, "size": file_size}
    if n == 0:
        header.problems.append(Observation("safetensors/header-length", Severity.HIGH,
                                           "header length is 0", location="offset 0", evidence=ev))
        return header
    if n > max_header:
        header.problems.append(Observation(
            "safetensors/header-too-large", Severity.HIGH,
            f"header claims {n} bytes, above the {max_header}-byte limit (not read)",
            location="offset 0", evidence={**ev, "limit": max_header}))
        return header
    if n > file_size - 8:
        header.problems.append(Observation(
            "safetensors/header-length", Severity.HIGH,
            f"header claims {n} bytes but only {max(file_size - 8, 0)} follow the length field",
            location="offset 0", evidence=ev))
        return header
    raw = fh.read(n)
    if len(raw) != n:
        header.problems.append(Observation("safetensors/truncated", Severity.HIGH,
                                           f"could read only {len(raw)} of {n} header bytes", evidence=ev))
        return header
    doc = _parse_json(raw, header)
    if doc is None:
        return header
    _validate(doc, header, budget)
    _check_coverage(fh, header)
    return header


def _parse_json(raw: bytes, header: Header) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        header.problems.append(Observation("safetensors/header-encoding", Severity.HIGH,
                                           f"header is not UTF-8: {exc.reason}",
                                           location=f"offset {8 + exc.start}"))
        return None
    if not text.startswith("{"):
        header.problems.append(Observation("safetensors/header-start", Severity.MEDIUM,
                                           "header does not begin with '{' as the spec requires",
                                           location="offset 8", evidence={"first": text[:16]}))
    stripped = text.rstrip(" ")
    if stripped != stripped.rstrip():
        header.problems.append(Observation("safetensors/header-padding", Severity.LOW,
                                           "header is padded with whitespace other than spaces (0x20)",
                                           location=f"offset {8 + len(stripped.rstrip())}"))
    strict = _Strict()
    try:
        doc = json.loads(text, object_pairs_hook=strict.pairs, parse_constant=strict.constant)
    except (ValueError, RecursionError) as exc:
        header.problems.append(Observation(
            "safetensors/header-json", Severity.HIGH,
            f"header is not valid JSON: {str(exc)[:200]}", location="offset 8"))
        return None
    if strict.duplicates:
        header.problems.append(Observation(
            "safetensors/duplicate-key", Severity.HIGH,
            f"header repeats keys {sorted(set(strict.duplicates))[:10]}: loaders disagree on which wins",
            evidence={"keys": sorted(set(strict.duplicates))[:100], "count": len(strict.duplicates)}))
    if not isinstance(doc, dict):
        header.problems.append(Observation("safetensors/header-not-object", Severity.HIGH,
                                           f"header is a JSON {type(doc).__name__}, not an object"))
        return None
    return doc


def _is_uint(value: Any) -> bool:
    return type(value) is int and value >= 0  # not bool, not float


def _validate(doc: dict[str, Any], header: Header, budget: Budget | None) -> None:
    add = header.problems.append
    for i, (name, entry) in enumerate(doc.items()):
        if budget is not None and i % 1024 == 0:
            budget.tick("validating safetensors header")
        if name == "__metadata__":
            _check_metadata(entry, header)
            continue
        loc = f"tensor {name}"
        if not isinstance(entry, dict) or not set(entry) >= ENTRY_KEYS:
            add(Observation("safetensors/bad-entry", Severity.HIGH,
                            f"tensor {name!r} lacks dtype/shape/data_offsets", location=loc))
            continue
        extra = set(entry) - ENTRY_KEYS
        if extra:
            add(Observation("safetensors/bad-entry", Severity.MEDIUM,
                            f"tensor {name!r} has unknown fields {sorted(extra)}", location=loc))
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        ok = True
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            add(Observation("safetensors/bad-dtype", Severity.HIGH,
                            f"tensor {name!r} has unknown dtype {str(dtype)[:40]!r}", location=loc))
            ok = False
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            add(Observation("safetensors/bad-shape", Severity.HIGH,
                            f"tensor {name!r} shape is not a list of non-negative integers",
                            location=loc, evidence={"shape": str(shape)[:200]}))
            ok = False
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_uint(o) for o in offsets)
                or offsets[0] > offsets[1]):
            add(Observation("safetensors/bad-offsets", Severity.HIGH,
                            f"tensor {name!r} data_offsets is not [begin, end] with 0 <= begin <= end",
                            location=loc, evidence={"data_offsets": str(offsets)[:200]}))
            continue
        begin, end = offsets
        if end > U64_MAX:
            add(Observation("safetensors/numel-overflow", Severity.HIGH,
                            f"tensor {name!r} offsets overflow 64 bits", location=loc))
            continue
        header.tensors.append(TensorEntry(name, dtype if isinstance(dtype, str) else "?",
                                          shape if isinstance(shape, list) else [], begin, end))
        if ok:
            _check_size(name, dtype, shape, begin, end, header)
    _check_layout(header, budget)


def _check_metadata(meta: Any, header: Header) -> None:
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        header.problems.append(Observation(
            "safetensors/metadata-type", Severity.MEDIUM,
            "__metadata__ must map strings to strings", location="__metadata__",
            evidence={"type": type(meta).__name__}))
        return
    header.metadata = meta


def _check_size(name: str, dtype: str, shape: list[int], begin: int, end: int, header: Header) -> None:
    numel = 1
    for d in shape:
        numel *= d
        if numel > U64_MAX:
            break
    bits = numel * DTYPE_BITS[dtype]
    loc = f"tensor {name}"
    if numel > U64_MAX or bits // 8 > U64_MAX:
        header.problems.append(Observation("safetensors/numel-overflow", Severity.HIGH,
                                           f"tensor {name!r} element count overflows 64 bits",
                                           location=loc, evidence={"shape": shape[:16]}))
        return
    if bits % 8:
        header.problems.append(Observation(
            "safetensors/byte-count", Severity.HIGH,
            f"tensor {name!r}: {numel} x {dtype} is not a whole number of bytes",
            location=loc, evidence={"numel": numel, "dtype": dtype}))
        return
    if end - begin != bits // 8:
        header.problems.append(Observation(
            "safetensors/byte-count", Severity.HIGH,
            f"tensor {name!r} spans {end - begin} bytes but {dtype}{shape} needs {bits // 8}",
            location=loc, evidence={"span": end - begin, "expected": bits // 8, "dtype": dtype}))


def _check_layout(header: Header, budget: Budget | None) -> None:
    data_size = header.file_size - header.data_start
    cursor = 0
    previous: TensorEntry | None = None
    for i, t in enumerate(sorted(header.tensors, key=lambda t: (t.begin, t.end))):
        if budget is not None and i % 1024 == 0:
            budget.tick("checking safetensors layout")
        loc = f"tensor {t.name}"
        if t.end > data_size:
            header.problems.append(Observation(
                "safetensors/past-eof", Severity.HIGH,
                f"tensor {t.name!r} ends at data byte {t.end}, past the end of the file ({data_size})",
                location=loc, evidence={"end": t.end, "data_size": data_size}))
        if previous is not None and t.begin < cursor:
            header.problems.append(Observation(
                "safetensors/overlap", Severity.HIGH,
                f"tensor {t.name!r} [{t.begin}, {t.end}) overlaps {previous.name!r} (ends at {cursor})",
                location=loc, evidence={"begin": t.begin, "overlaps": previous.name, "other_end": cursor}))
        elif t.begin > cursor:
            header.problems.append(Observation(
                "safetensors/gap", Severity.MEDIUM,
                f"{t.begin - cursor} unexplained bytes before tensor {t.name!r} (the spec forbids holes)",
                location=f"data offset {cursor}", evidence={"begin": cursor, "bytes": t.begin - cursor}))
        if t.end >= cursor:
            cursor, previous = t.end, t
    header.covered = cursor


def _check_coverage(fh: BinaryIO, header: Header) -> None:
    """Bytes after the last tensor: the spec says the buffer must be fully covered. A zip or pickle
    there makes a polyglot that other loaders (torch.load) open as something else."""
    covered = header.covered
    data_size = header.file_size - header.data_start
    extra = data_size - covered
    if extra <= 0:
        return
    start = header.data_start + covered
    fh.seek(start)
    tail = fh.read(min(extra, TAIL_SNIFF_BYTES))
    inner = fmts.sniff(tail[:600], "", extra)
    polyglot = (b"PK\x05\x06" in tail or b"PK\x03\x04" in tail
                or inner in (fmts.PICKLE, fmts.ZIP, fmts.TORCH_LEGACY, fmts.NUMPY, fmts.GZIP))
    if polyglot:
        header.problems.append(Observation(
            "safetensors/polyglot", Severity.HIGH,
            f"{extra} bytes after the last tensor look like {inner if inner != fmts.UNKNOWN else 'a zip'}: "
            "another loader may read this file as a different format",
            location=f"offset {start}", evidence={"offset": start, "bytes": extra, "sniffed": inner}))
    else:
        header.problems.append(Observation(
            "safetensors/trailing-bytes", Severity.MEDIUM,
            f"{extra} bytes after the last tensor are not covered by the header",
            location=f"offset {start}", evidence={"offset": start, "bytes": extra}))


class SafetensorsHeaderCheck(Check):
    id = "static.safetensors"
    THRESHOLDS = {"max-header-bytes": MAX_HEADER_BYTES}
    tier = "static"
    version = "1"
    description = ("safetensors header: bounds, JSON, dtypes, shapes, offsets (no overlap/gap/EOF); "
                   "shard indexes")

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        # by name too: a header with a hostile length is not sniffed as safetensors at all
        return fmt == fmts.SAFETENSORS or file.name.lower().endswith(".safetensors")

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        pointer = lfs_pointer_problem(file, "safetensors")
        if pointer is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        limit = int(ctx.threshold(self.id, "max-header-bytes", MAX_HEADER_BYTES))
        with file.open() as fh:
            header = read_header(fh, file.size, limit, ctx.budget())
        if fmt not in (fmts.SAFETENSORS, fmts.UNKNOWN, fmts.JSON, fmts.TEXT):
            yield self.finding("safetensors/not-safetensors", Severity.HIGH,
                               f"named .safetensors but the content is {fmt}", file=file.path,
                               evidence={"sniffed": fmt},
                               remediation="Treat it as the format it really is; do not load it.")
        yield from self.findings_from(header.problems, file=file.path,
                                      remediation="Do not load this file; re-export it with safetensors.")

    def check_target(self, target: Target, ctx: ScanContext) -> Iterable[Finding]:
        by_path = {f.path: f for f in target.files}
        for f in target.files:
            if f.name.endswith(".index.json"):
                yield from self._check_index(f, by_path, ctx)

    def _check_index(self, index: TargetFile, by_path: dict[str, TargetFile],
                     ctx: ScanContext) -> Iterator[Finding]:
        def bad(rule: str, sev: Severity, msg: str, **kw: Any) -> Finding:
            return self.finding(rule, sev, msg, file=index.path, **kw)

        try:
            doc = load_json_bounded(index, MAX_INDEX_BYTES)
        except TooLarge as exc:
            yield bad("safetensors/index-too-large", Severity.MEDIUM, f"shard index not parsed: {exc}")
            return
        except ValueError as exc:
            yield bad("safetensors/index-json", Severity.MEDIUM, f"shard index is not valid JSON: {exc}")
            return
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if weight_map is None:
            return  # some other *.index.json (not a checkpoint index)
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            yield bad("safetensors/index-json", Severity.MEDIUM,
                      "weight_map must map tensor names to file names")
            return
        folder = posixpath.dirname(index.path)
        budget = ctx.budget()
        shards: dict[str, list[str]] = {}
        for tensor, shard in weight_map.items():
            budget.tick("reading shard index")
            shards.setdefault(shard, []).append(tensor)
        for shard, tensors in sorted(shards.items()):
            if _escapes(shard):
                yield bad("safetensors/index-path-escape", Severity.HIGH,
                          f"weight_map points outside the repository: {shard!r}", location=f"shard {shard}",
                          evidence={"shard": shard, "tensors": len(tensors)},
                          remediation="Shard paths must be plain file names inside the repository.")
                continue
            path = posixpath.join(folder, shard) if folder else shard
            target = by_path.get(path)
            if target is None:
                yield bad("safetensors/index-missing-shard", Severity.MEDIUM,
                          f"weight_map names {shard!r}, which is not in the scanned files",
                          location=f"shard {shard}", evidence={"shard": shard, "tensors": len(tensors)})
                continue
            if shard.endswith(".safetensors"):
                yield from self._compare_shard(index, target, shard, set(tensors), ctx)

    def _compare_shard(self, index: TargetFile, shard_file: TargetFile, shard: str, listed: set[str],
                       ctx: ScanContext) -> Iterator[Finding]:
        limit = int(ctx.threshold(self.id, "max-header-bytes", MAX_HEADER_BYTES))
        with shard_file.open() as fh:
            header = read_header(fh, shard_file.size, limit, ctx.budget())
        if not header.tensors:
            return  # its own per-file findings say why
        present = {t.name for t in header.tensors}
        missing, unlisted = sorted(listed - present), sorted(present - listed)
        if missing or unlisted:
            yield self.finding(
                "safetensors/index-mismatch", Severity.MEDIUM,
                f"weight_map and {shard} disagree: {len(missing)} listed tensors missing, "
                f"{len(unlisted)} tensors not listed", file=index.path, location=f"shard {shard}",
                evidence={"missing": missing[:20], "unlisted": unlisted[:20]})


def _escapes(rel: str) -> bool:
    """A shard path that is absolute, climbs out with '..', or is a URL."""
    if not rel or "\\" in rel or "\x00" in rel or "://" in rel or rel.startswith(("/", "~")):
        return True
    if len(rel) > 1 and rel[1] == ":":  # C:
        return True
    return ".." in rel.split("/")
