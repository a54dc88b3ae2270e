"""A minimal protobuf wire-format reader: the fields of one message, bounded by its length, over bytes
in memory or a seekable file read a block at a time (constant tensors and other large fields are
skipped by length, never read). Callers walk only the fields that matter to them (a fixed schema),
so nesting is bounded by their schema (or by the caller's depth limit where the schema recurses),
not by the input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 64 * 1024


class WireError(ValueError):
    pass


class Source:
    """Random access to a message's bytes: a bytes object, or a file read through a one-block cache."""

    def __init__(self, data: bytes | BinaryIO, size: int | None = None) -> None:
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.data: bytes | None = bytes(data)
            self.fh = None
            self.size = len(self.data)
        else:
            self.data, self.fh = None, data
            self.size = size if size is not None else 0
        self.block_at, self.block = -1, b""
        self.bytes_read = 0

    def read(self, pos: int, n: int) -> bytes:
        """Up to n bytes at pos (fewer only at the end of the source)."""
        if self.data is not None:
            return self.data[pos:pos + n]
        if self.block_at <= pos and pos + n <= self.block_at + len(self.block):
            return self.block[pos - self.block_at:pos - self.block_at + n]
        assert self.fh is not None
        self.fh.seek(pos)
        self.block_at, self.block = pos, self.fh.read(max(n, BLOCK))
        self.bytes_read += len(self.block)
        return self.block[:n]


def _varint(src: Source, pos: int, end: int) -> tuple[int, int]:
    chunk = src.read(pos, min(10, end - pos))
    result = shift = 0
    for i, b in enumerate(chunk):
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos + i + 1
        shift += 7
    raise WireError(f"bad varint at offset {pos}")


def varint(src: Source, start: int, end: int) -> int:
    """The value of a varint field (its bytes as `fields(..., varints=True)` gives them)."""
    return _varint(src, start, end)[0]


def fields(
    src: Source, start: int, end: int, *, varints: bool = False
) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each length-delimited field of one
    message, and of each varint field when `varints` (read it with `varint`); fixed-width values are
    skipped, every length checked against the message."""
    pos = start
    while pos < end:
        key, pos = _varint(src, pos, end)
        num, wtype = key >> 3, key & 7
        if num == 0:
            raise WireError(f"field number 0 at offset {pos}")
        if wtype == 0:
            vstart = pos
            _, pos = _varint(src, pos, end)
            if varints:
                yield num, wtype, vstart, pos
            continue
        if wtype == 1:
            pos += 8
        elif wtype == 5:
            pos += 4
        elif wtype == 2:
            n, pos = _varint(src, pos, end)
            if pos + n > end:
                raise WireError(f"field {num} of {n} bytes runs past its message at offset {pos}")
            yield num, wtype, pos, pos + n
            pos += n
            continue
        else:
            raise WireError(f"wire type {wtype} at offset {pos}")
        if pos > end:
            raise WireError("fixed-width field runs past its message")


def text(src: Source, start: int, end: int, limit: int = 256) -> str:
    return src.read(start, min(end - start, limit)).decode("utf-8", "replace")
