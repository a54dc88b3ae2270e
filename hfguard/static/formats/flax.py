"""static.flax: flax msgpack checkpoints (`flax_model.msgpack`, `*.msgpack`), headers only.

flax.serialization.to_bytes writes a msgpack map of nested maps whose leaves are extension types:
1 = ndarray (a msgpack (shape, dtype name, bytes) triple), 2 = complex, 3 = numpy scalar. Restoring
calls `np.dtype(name)` and `np.frombuffer`. This walks the msgpack stream iteratively, seeking past
every payload (only the first bytes of an ndarray extension are read, for its shape and dtype), and
reports extension types flax does not restore, dtypes outside numpy's plain numeric ones, arrays whose
byte count disagrees with shape x dtype, and nesting or counts past any real checkpoint.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.problems import lfs_pointer_problem
from hfguard.target import TargetFile

MAX_DEPTH = 64
MAX_ITEMS = 10_000_000
EXT_NDARRAY, EXT_COMPLEX, EXT_SCALAR = 1, 2, 3
_ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
             "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8,
             "complex64": 8, "complex128": 16, "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3b11fnuz": 1,
             "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1, "int4": 1, "uint4": 1}
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2,
          0xD2: 4, 0xD3: 8}
_LEN = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}          # bin / str: length width
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}


class _Bad(ValueError):
    pass


@dataclass
class MsgpackScan:
    problems: list[Observation] = field(default_factory=list)
    arrays: int = 0
    items: int = 0


class _Stream:
    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size, self.pos = fh, size, 0

    def read(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise _Bad(f"needs {n} bytes at offset {self.pos}, past the end ({self.size})")
        data = self.fh.read(n)
        if len(data) != n:
            raise _Bad(f"short read at offset {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Bad(f"skips {n} bytes at offset {self.pos}, past the end ({self.size})")
        self.pos += n
        self.fh.seek(self.pos)

    def uint(self, width: int) -> int:
        return int.from_bytes(self.read(width), "big")


def _ndarray_head(data: bytes) -> tuple[list[int], str, int]:
    """Parse `[shape, dtype, bin]` from the start of an ndarray extension payload, by hand."""
    p = 0

    def take(n: int) -> bytes:
        nonlocal p
        if p + n > len(data):
            raise _Bad("ndarray header cut short")
        p += n
        return data[p - n:p]

    def intval() -> int:
        b = take(1)[0]
        if b < 0x80:
            return b
        if b in (0xCC, 0xCD, 0xCE, 0xCF):
            return int.from_bytes(take(_FIXED[b]), "big")
        raise _Bad(f"ndarray shape entry of type 0x{b:02x}")

    def count(b: int, fix_lo: int, fix_hi: int, w16: int, w32: int) -> int:
        if fix_lo <= b <= fix_hi:
            return b - fix_lo
        if b == w16:
            return int.from_bytes(take(2), "big")
        if b == w32:
            return int.from_bytes(take(4), "big")
        raise _Bad(f"ndarray header byte 0x{b:02x}")

    if count(take(1)[0], 0x90, 0x9F, 0xDC, 0xDD) != 3:
        raise _Bad("ndarray extension is not a (shape, dtype, buffer) triple")
    n = count(take(1)[0], 0x90, 0x9F, 0xDC, 0xDD)
    if n > 32:
        raise _Bad(f"ndarray of {n} dimensions")
    shape = [intval() for _ in range(n)]
    b = take(1)[0]
    if 0xA0 <= b <= 0xBF:
        dlen = b - 0xA0
    elif b in (0xD9, 0xC4):
        dlen = take(1)[0]
    else:
        raise _Bad(f"ndarray dtype of type 0x{b:02x}")
    dtype = take(dlen).decode("utf-8", "replace")
    b = take(1)[0]
    if b not in _LEN:
        raise _Bad(f"ndarray buffer of type 0x{b:02x}")
    return shape, dtype, int.from_bytes(take(_LEN[b]), "big")


def scan_msgpack(fh: BinaryIO, size: int, budget: Budget | None = None) -> MsgpackScan:
    out = MsgpackScan()
    s = _Stream(fh, size)
    fh.seek(0)
    add = out.problems.append
    try:
        remaining = [1]           # items left at each open level
        while remaining:
            if remaining[-1] == 0:
                remaining.pop()
                continue
            remaining[-1] -= 1
            out.items += 1
            if out.items > MAX_ITEMS:
                add(Observation("flax/too-complex", Severity.MEDIUM, f"more than {MAX_ITEMS} msgpack items"))
                return out
            if budget is not None and out.items % 8192 == 0:
                budget.tick("walking a msgpack checkpoint")
            at = s.pos
            b = s.read(1)[0]
            n = -1
            if b <= 0x7F or b >= 0xE0 or b in _FIXED:
                s.skip(_FIXED.get(b, 0))
            elif 0x80 <= b <= 0x8F or b in (0xDE, 0xDF):       # map
                n = 2 * (b - 0x80 if b <= 0x8F else s.uint(2 if b == 0xDE else 4))
            elif 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):       # array
                n = b - 0x90 if b <= 0x9F else s.uint(2 if b == 0xDC else 4)
            elif 0xA0 <= b <= 0xBF:
                s.skip(b - 0xA0)
            elif b in _LEN:
                s.skip(s.uint(_LEN[b]))
            elif b in _EXT or b in _FIXEXT:
                length = s.uint(_EXT[b]) if b in _EXT else _FIXEXT[b]
                etype = struct.unpack(">b", s.read(1))[0]
                _extension(s, etype, length, at, out)
            else:
                raise _Bad(f"byte 0x{b:02x} at offset {at} is not msgpack")
            if n >= 0:
                if n > size - s.pos + 1 and n > 0:   # every item takes at least one byte
                    raise _Bad(f"count {n} at offset {at} cannot fit in the file")
                if len(remaining) >= MAX_DEPTH:
                    add(Observation("flax/too-deep", Severity.HIGH,
                                    f"msgpack containers nested more than {MAX_DEPTH} deep", f"offset {at}"))
                    return out
                remaining.append(n)
        if s.pos != size:
            add(Observation("flax/trailing-data", Severity.MEDIUM,
                            f"{size - s.pos} bytes after the checkpoint's msgpack object", f"offset {s.pos}"))
    except _Bad as exc:
        add(Observation("flax/malformed", Severity.HIGH, f"not a readable msgpack checkpoint: {exc}",
                        f"offset {s.pos}"))
    return out


def _extension(s: _Stream, etype: int, length: int, at: int, out: MsgpackScan) -> None:
    loc = f"offset {at}"
    if etype == EXT_NDARRAY:
        start = s.pos
        shape, dtype, nbytes = _ndarray_head(s.read(min(length, 512)))
        out.arrays += 1
        s.skip(length - (s.pos - start))
        itemsize = _ITEMSIZE.get(dtype.lstrip("<>=|"))
        if itemsize is None:
            out.problems.append(Observation("flax/bad-dtype", Severity.HIGH,
                                            f"array dtype {dtype[:40]!r} is not a plain numeric dtype", loc,
                                            {"dtype": dtype[:100]}))
            return
        numel = 1
        for d in shape:
            numel *= d
        if numel * itemsize != nbytes and not dtype.endswith("4"):
            out.problems.append(Observation("flax/bad-array", Severity.HIGH,
                                            f"array {shape} {dtype} holds {nbytes} bytes, not "
                                            f"{numel * itemsize}", loc,
                                            {"shape": shape[:8], "bytes": nbytes}))
    elif etype in (EXT_COMPLEX, EXT_SCALAR):
        s.skip(length)
    else:
        s.skip(length)
        out.problems.append(Observation("flax/unknown-ext", Severity.MEDIUM,
                                        f"msgpack extension type {etype}, which flax does not write", loc,
                                        {"ext_type": etype}))


class FlaxCheck(Check):
    id = "static.flax"
    tier = "static"
    version = "1"
    description = "flax msgpack checkpoints: extension types, dtypes, array sizes, nesting (headers only)"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return file.name.lower().endswith(".msgpack")

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        if (pointer := lfs_pointer_problem(file, "flax")) is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        with file.open() as fh:
            result = scan_msgpack(fh, file.size, ctx.budget())
        if result.arrays == 0 and not result.problems:
            # some other msgpack document: nothing flax would restore, nothing to vet (not a FLAG)
            result.problems.append(Observation("flax/malformed", Severity.LOW,
                                               "no arrays: not a flax checkpoint"))
        yield from self.findings_from(result.problems, file=file.path,
                                      remediation="Do not restore this checkpoint with flax.serialization.")
