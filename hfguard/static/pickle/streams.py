"""Byte streams for the containers: slices of a parent stream, bounded decompression, spooling.

Everything reads lazily from the parent and never holds more than a buffer; decompression counts
its output and stops with `StreamLimit` (a VM stop, so a pickle decoder reports it) at a size or
ratio bound: a zip bomb becomes a finding, not an out-of-memory.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tempfile
import zlib
from typing import IO, Any, BinaryIO

from hfguard.budget import Budget
from hfguard.static.pickle.vm import VMStop
from hfguard.target import RandomAccessReader

CHUNK = 1 << 16


class StreamLimit(VMStop):
    """Decompressed output passed a bound (rule archive/bomb)."""


class Slice(RandomAccessReader):
    """A read-only, seekable window [start, start+length) of a shared parent stream."""

    def __init__(self, parent: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self.parent, self.start, self.size = parent, start, length

    def _read_at(self, pos: int, n: int) -> bytes:
        self.parent.seek(self.start + pos)
        return self.parent.read(n)


def buffered(raw: io.RawIOBase, size: int = CHUNK) -> io.BufferedReader:
    return io.BufferedReader(raw, size)


def open_slice(parent: BinaryIO, start: int, length: int) -> io.BufferedReader:
    return buffered(Slice(parent, start, length))


class _Inflate(io.RawIOBase):
    """zlib / raw deflate with bounded output per read (decompress(..., max_length))."""

    def __init__(self, src: IO[bytes], wbits: int) -> None:
        super().__init__()
        self.src, self.d = src, zlib.decompressobj(wbits)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        out = b""
        while not out:
            if self.d.eof:
                return 0
            data = self.d.unconsumed_tail or self.src.read(CHUNK)
            if not data:
                raise EOFError("compressed stream ends before its end marker")
            out = self.d.decompress(data, len(b))
        b[: len(out)] = out
        return len(out)


class _Capped(io.RawIOBase):
    """Counts what a decompressor yields; refuses more than `cap` bytes or `ratio` x the input."""

    def __init__(
        self,
        inner: IO[bytes],
        compressed_size: int | None,
        cap: int,
        ratio: float,
        ratio_floor: int,
        budget: Budget | None,
    ) -> None:
        super().__init__()
        self.inner, self.compressed_size, self.cap = inner, compressed_size, cap
        self.ratio, self.ratio_floor, self.budget, self.total = ratio, ratio_floor, budget, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self.inner.readinto(b)  # type: ignore[attr-defined]
        self.total += n
        if self.total > self.cap:
            raise StreamLimit(
                "archive/bomb",
                f"decompressed data exceeds {self.cap} bytes",
                limit=self.cap,
                limit_name="max_decompressed",
            )
        if (
            self.compressed_size
            and self.total > self.ratio_floor
            and self.total > self.ratio * self.compressed_size
        ):
            raise StreamLimit(
                "archive/bomb",
                f"compression ratio above {self.ratio:.0f}:1 "
                f"({self.total} bytes from {self.compressed_size})",
                ratio=round(self.total / self.compressed_size, 1),
                compressed=self.compressed_size,
                limit=self.ratio,
                limit_name="max_ratio",
            )
        if self.budget is not None:
            self.budget.tick("decompressing")
        return n


def decompressor(kind: str, src: IO[bytes]) -> IO[bytes]:
    """kind: gzip | bzip2 | xz | lzma | zlib | deflate (raw, as in zip) | lzma-zip | bzip2."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=src, mode="rb")
    if kind == "bzip2":
        return bz2.BZ2File(src, "rb")
    if kind in ("xz", "lzma"):
        return lzma.LZMAFile(src, "rb")
    if kind == "zlib":
        return _Inflate(src, zlib.MAX_WBITS)
    if kind == "deflate":
        return _Inflate(src, -zlib.MAX_WBITS)
    if kind == "lzma-zip":
        return _ZipLzma(src)
    raise ValueError(f"no decompressor for {kind}")


class _ZipLzma(io.RawIOBase):
    """Zip method 14: a 4-byte version/size header, LZMA1 properties, then a raw LZMA1 stream."""

    def __init__(self, src: IO[bytes]) -> None:
        super().__init__()
        head = src.read(4)
        if len(head) < 4:
            raise EOFError("zip lzma header truncated")
        psize = int.from_bytes(head[2:4], "little")
        props = src.read(psize)
        filt = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # type: ignore[attr-defined]
        self.src, self.d = src, lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[filt])

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        out = b""
        while not out:
            if self.d.eof:
                return 0
            data = b"" if not self.d.needs_input else self.src.read(CHUNK)
            if self.d.needs_input and not data:
                return 0
            out = self.d.decompress(data, len(b))
        b[: len(out)] = out
        return len(out)


def open_decompressed(
    kind: str,
    src: IO[bytes],
    compressed_size: int | None,
    *,
    cap: int,
    ratio: float,
    ratio_floor: int,
    budget: Budget | None,
) -> io.BufferedReader:
    return buffered(_Capped(decompressor(kind, src), compressed_size, cap, ratio, ratio_floor, budget))


def spool(src: IO[bytes], cap: int, budget: Budget | None) -> IO[bytes]:
    """Copy a non-seekable stream into a temp file (memory up to 16 MB, then disk), bounded."""
    out = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # noqa: SIM115 - returned to the caller
    total = 0
    while chunk := src.read(CHUNK * 4):
        total += len(chunk)
        if total > cap:
            out.close()
            raise StreamLimit(
                "archive/bomb",
                f"nested archive larger than {cap} bytes",
                limit=cap,
                limit_name="max_decompressed",
            )
        out.write(chunk)
        if budget is not None:
            budget.tick("spooling")
    out.seek(0)
    return out  # type: ignore[return-value]


class CrcTap(io.RawIOBase):
    """Passes bytes through and keeps their CRC-32 and count."""

    def __init__(self, inner: IO[bytes]) -> None:
        super().__init__()
        self.inner, self.crc, self.count = inner, 0, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.inner.read(len(b))
        b[: len(data)] = data
        self.crc = zlib.crc32(data, self.crc)
        self.count += len(data)
        return len(data)

    def drain(self, budget: Budget | None) -> None:
        while chunk := self.inner.read(CHUNK * 4):
            self.crc = zlib.crc32(chunk, self.crc)
            self.count += len(chunk)
            if budget is not None:
                budget.tick("checking CRC")
