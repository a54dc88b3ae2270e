"""static.gguf: validate a GGUF header (llama.cpp) without reading tensor data.

GGUF is ``magic, version, tensor count, metadata count``, then typed key/value metadata, then tensor
infos (name, dims, ggml type, offset into an aligned data section). Parsers in C have had memory
bugs on hostile counts and lengths, so every count and length is bounded against the file size
before anything is allocated. The metadata's Jinja chat templates are checked for template-injection
gadgets (llama-cpp-python rendered them unsandboxed: CVE-2024-34359).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from hfguard import sniff as fmts
from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.code.templates import template_problems
from hfguard.static.problems import lfs_pointer_problem
from hfguard.target import TargetFile

MAX_COUNT = 1 << 20                 # tensors or metadata pairs
MAX_ARRAY = 1 << 26                 # elements in one metadata array
MAX_STRING = 64 * 1024 * 1024
MAX_DIMS = 4                        # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32
MAX_TEMPLATE = 1 << 20              # chat template text kept for inspection
MAX_NESTING = 16                    # arrays of arrays; real files nest at most 1 deep

# value type id -> (struct code, size); 8 = string, 9 = array
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4), 6: ("f", 4),
    7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8),
}
STRING, ARRAY = 8, 9

# ggml type id -> (elements per block, bytes per block); Q8_1 is left out (writers disagree on its size)
GGML_TYPES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}
KNOWN_UNSIZED = {9}

class _Truncated(Exception):
    pass


class _TooDeep(Exception):
    pass


@dataclass
class TensorInfo:
    name: str
    dims: list[int]
    ggml_type: int
    offset: int


@dataclass
class GGUFHeader:
    version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)   # scalars and short strings only
    tensors: list[TensorInfo] = field(default_factory=list)
    data_start: int = 0
    problems: list[Observation] = field(default_factory=list)


class _Reader:
    def __init__(self, fh: BinaryIO, size: int, endian: str, wide: bool, budget: Budget | None) -> None:
        self.fh, self.size, self.e, self.wide, self.budget = fh, size, endian, wide, budget
        self.pos = fh.tell()
        self.steps = 0

    def read(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise _Truncated(f"needs {n} bytes at offset {self.pos}, past the end ({self.size})")
        data = self.fh.read(n)
        if len(data) != n:
            raise _Truncated(f"short read at offset {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Truncated(f"skips {n} bytes at offset {self.pos}, past the end ({self.size})")
        self.pos += n
        self.fh.seek(self.pos)

    def unpack(self, code: str) -> Any:
        return struct.unpack(self.e + code, self.read(struct.calcsize(code)))[0]

    def count(self) -> int:
        return self.unpack("Q" if self.wide else "I")

    def tick(self) -> None:
        self.steps += 1
        if self.budget is not None and self.steps % 4096 == 0:
            self.budget.tick("reading a GGUF header")

    def string(self, keep: int = 0) -> str | None:
        n = self.count()
        if n > MAX_STRING:
            raise ValueError(f"string of {n} bytes at offset {self.pos}")
        if n <= keep:
            return self.read(n).decode("utf-8", "replace")
        self.skip(n)
        return None


def read_gguf_header(fh: BinaryIO, size: int, budget: Budget | None = None) -> GGUFHeader:
    header = GGUFHeader()
    add = header.problems.append
    fh.seek(0)
    head = fh.read(8)
    if len(head) < 8 or head[:4] != b"GGUF":
        add(Observation("gguf/truncated", Severity.HIGH, "no GGUF magic and version"))
        return header
    little = struct.unpack("<I", head[4:8])[0]
    endian = "<" if little < 0x10000 else ">"  # big-endian files exist (s390x builds)
    header.version = struct.unpack(endian + "I", head[4:8])[0]
    if header.version not in (1, 2, 3):
        add(Observation("gguf/bad-version", Severity.MEDIUM, f"unknown GGUF version {header.version}",
                        "offset 4", {"version": header.version}))
        return header
    r = _Reader(fh, size, endian, header.version >= 2, budget)
    try:
        n_tensors, n_kv = r.count(), r.count()
        # each tensor info takes >= 24 bytes and each pair >= 13: a bigger count cannot fit
        for what, n, floor in (("tensor", n_tensors, 24), ("metadata", n_kv, 13)):
            if n > MAX_COUNT or n * floor > size:
                add(Observation("gguf/count-bounds", Severity.HIGH,
                                f"{what} count {n} cannot fit in a {size}-byte file (or exceeds {MAX_COUNT})",
                                "offset 8", {"count": n, "size": size}))
                return header
        _read_metadata(r, n_kv, header)
        _check_templates(header)
        _read_tensor_infos(r, n_tensors, header)
    except _Truncated as exc:
        add(Observation("gguf/truncated", Severity.HIGH, f"header runs past the end of the file: {exc}",
                        f"offset {r.pos}"))
        return header
    except _TooDeep as exc:
        add(Observation("gguf/too-deep", Severity.HIGH, f"metadata arrays nested too deeply: {exc}",
                        f"offset {r.pos}"))
        return header
    except ValueError as exc:
        add(Observation("gguf/bounds", Severity.HIGH, f"hostile length in the header: {exc}",
                        f"offset {r.pos}"))
        return header
    _check_layout(header, r.pos, size)
    return header


def _read_metadata(r: _Reader, n_kv: int, header: GGUFHeader) -> None:
    seen: set[str] = set()
    for _ in range(n_kv):
        r.tick()
        key = r.string(keep=4096)
        if key is None:
            raise ValueError("metadata key longer than 4096 bytes")
        if key in seen:
            header.problems.append(Observation("gguf/duplicate-key", Severity.MEDIUM,
                                               f"metadata key {key!r} appears twice: readers disagree",
                                               f"metadata {key}"))
        seen.add(key)
        vtype = r.unpack("I")
        keep = MAX_TEMPLATE if key.startswith("tokenizer.chat_template") else 256
        value = _read_value(r, vtype, keep, key)
        if value is not None:
            header.metadata[key] = value
        elif keep == MAX_TEMPLATE and vtype == STRING:
            header.problems.append(Observation("gguf/template-too-large", Severity.MEDIUM,
                                               f"chat template {key!r} is over {MAX_TEMPLATE} bytes; "
                                               "not inspected",
                                               f"metadata {key}"))


def _read_value(r: _Reader, vtype: int, keep: int, key: str, depth: int = 0) -> Any:
    if vtype in _SCALARS:
        return r.unpack(_SCALARS[vtype][0])
    if vtype == STRING:
        return r.string(keep)
    if vtype == ARRAY:
        if depth >= MAX_NESTING:
            raise _TooDeep(f"array {key!r} nests more than {MAX_NESTING} levels")
        etype, n = r.unpack("I"), r.count()
        if n > MAX_ARRAY:
            raise ValueError(f"array {key!r} of {n} elements")
        if etype in _SCALARS:
            r.skip(n * _SCALARS[etype][1])
            return None
        if etype not in (STRING, ARRAY):
            raise ValueError(f"array {key!r} of unknown type {etype}")
        for _ in range(n):
            r.tick()
            _read_value(r, etype, 0, key, depth + 1)
        return None
    raise ValueError(f"metadata {key!r} has unknown value type {vtype}")


def _read_tensor_infos(r: _Reader, n_tensors: int, header: GGUFHeader) -> None:
    for _ in range(n_tensors):
        r.tick()
        name = r.string(keep=4096)
        if name is None:
            raise ValueError("tensor name longer than 4096 bytes")
        n_dims = r.unpack("I")
        if n_dims > MAX_DIMS:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions (ggml allows {MAX_DIMS})")
        dims = [r.count() for _ in range(n_dims)]
        header.tensors.append(TensorInfo(name, dims, r.unpack("I"), r.unpack("Q")))


def _check_layout(header: GGUFHeader, infos_end: int, size: int) -> None:
    add = header.problems.append
    align = header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
        add(Observation("gguf/bad-alignment", Severity.HIGH,
                        f"general.alignment {align!r} is not a power of two", "metadata general.alignment"))
        return
    header.data_start = -(-infos_end // align) * align
    data_size = size - header.data_start
    spans: list[tuple[int, int, str]] = []
    names: set[str] = set()
    for t in header.tensors:
        loc = f"tensor {t.name}"
        if t.name in names:
            add(Observation("gguf/duplicate-tensor", Severity.HIGH, f"tensor {t.name!r} is listed twice",
                            loc))
        names.add(t.name)
        if t.offset % align:
            add(Observation("gguf/misaligned-offset", Severity.HIGH,
                            f"tensor {t.name!r} offset {t.offset} is not a multiple of {align}", loc))
        if t.ggml_type not in GGML_TYPES:
            if t.ggml_type not in KNOWN_UNSIZED:
                add(Observation("gguf/unknown-type", Severity.MEDIUM,
                                f"tensor {t.name!r} has unknown ggml type {t.ggml_type}", loc))
            if t.offset > data_size:
                add(Observation("gguf/past-eof", Severity.HIGH, f"tensor {t.name!r} starts past the end",
                                loc))
            continue
        block, nbytes = GGML_TYPES[t.ggml_type]
        numel = 1
        for d in t.dims:
            numel *= d
        if t.dims and t.dims[0] % block:
            add(Observation("gguf/bad-dims", Severity.HIGH,
                            f"tensor {t.name!r} row of {t.dims[0]} is not a whole number of {block}-blocks",
                            loc))
            continue
        length = numel // block * nbytes
        if t.offset + length > data_size:
            add(Observation("gguf/past-eof", Severity.HIGH,
                            f"tensor {t.name!r} [{t.offset}, {t.offset + length}) runs past the data section "
                            f"({data_size} bytes)", loc, {"offset": t.offset, "bytes": length}))
        spans.append((t.offset, t.offset + length, t.name))
    spans.sort()
    for (_b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:], strict=False):
        if b1 < e0:
            add(Observation("gguf/overlap", Severity.HIGH, f"tensor {n1!r} overlaps {n0!r}", f"tensor {n1}",
                            {"begin": b1, "other_end": e0}))


def _check_templates(header: GGUFHeader) -> None:
    """Chat templates in the metadata; run as soon as the metadata is read, so that a broken
    layout after it (bad alignment, truncated tensor infos) cannot hide a hostile template."""
    for key, value in header.metadata.items():
        if key.startswith("tokenizer.chat_template") and isinstance(value, str):
            header.problems.extend(template_problems(value, f"metadata {key}"))


class GGUFCheck(Check):
    id = "static.gguf"
    tier = "static"
    version = "1"
    description = ("GGUF header: counts and lengths bounded, tensor offsets aligned and inside the file; "
                   "chat templates")

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return fmt == fmts.GGUF or file.name.lower().endswith(".gguf")

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        pointer = lfs_pointer_problem(file, "gguf")
        if pointer is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        with file.open() as fh:
            header = read_gguf_header(fh, file.size, ctx.budget())
        yield from self.findings_from(header.problems, file=file.path,
                                      remediation="Do not load this file with llama.cpp or its bindings.")
