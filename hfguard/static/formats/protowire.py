"""A minimal protobuf wire-format reader over bytes in memory: the fields of one message, bounded by
its length. Callers walk only the fields that matter to them (a fixed schema), so nesting is bounded
by their schema, not by the input. (onnx.py has a seek-based reader of its own for huge files.)"""

from __future__ import annotations

from collections.abc import Iterator


class WireError(ValueError):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError(f"bad varint at offset {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field of one message; varints and
    fixed-width values are skipped, length-delimited ones bounded by the enclosing message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wtype = key >> 3, key & 7
        if wtype == 0:
            _, pos = _varint(buf, pos, end)
            continue
        if wtype == 1:
            pos += 8
        elif wtype == 5:
            pos += 4
        elif wtype == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise WireError(f"field {num} of {n} bytes runs past its message at offset {pos}")
            yield num, wtype, pos, pos + n
            pos += n
            continue
        else:
            raise WireError(f"wire type {wtype} at offset {pos}")
        if pos > end:
            raise WireError("fixed-width field runs past its message")
