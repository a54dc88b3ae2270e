"""Peeking at streams that may not seek: the one pushback wrapper and the one seekable test.

A leaf module (no hfguard imports) so that the VM, the container readers and the streams share it.
"""

from __future__ import annotations

import io
from typing import IO, Any


def is_seekable(fh: Any) -> bool:
    """Whether `fh` can seek; a closed or odd object counts as not seekable."""
    try:
        return bool(fh.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def peek(fh: IO[bytes], n: int) -> bytes:
    """The next `n` bytes without consuming them (the stream must buffer or seek)."""
    if hasattr(fh, "peek"):
        return fh.peek(n)[:n]
    pos = fh.tell()
    data = fh.read(n)
    fh.seek(pos)
    return data


class Prefixed(io.RawIOBase):
    """A stream with bytes pushed back in front of it (for peeks on non-seekable streams).

    `read` and `readline` are direct (the VM reads through them byte by byte); `readinto` lets it
    sit under an `io.BufferedReader` too.
    """

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if not self.head:
            return self.rest.read(-1 if n is None else n)
        if n is None or n < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        if len(data) < n:
            data += self.rest.read(n - len(data))
        return data

    def readline(self, limit: int | None = -1) -> bytes:
        limit = -1 if limit is None else limit
        if not self.head:
            return self.rest.readline(limit)
        head, self.head = self.head, b""
        if b"\n" in head:
            i = head.index(b"\n") + 1
            self.head = head[i:]
            return head[:i]
        return head + self.rest.readline(limit - len(head) if limit >= 0 else -1)

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(b))
        b[: len(data)] = data
        return len(data)
