"""Byte streams for the containers: slices of a parent stream, bounded decompression, spooling.

Everything reads lazily from the parent and never holds more than a buffer; decompression counts
its output and stops with `StreamLimit` (a VM stop, so a pickle decoder reports it) at a size or
ratio bound: a zip bomb becomes a finding, not an out-of-memory.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import zlib
from typing import IO, Any, Protocol

from hfguard.budget import Budget
from hfguard.static.pickle.vm import VMStop
from hfguard.target import RandomAccessReader

CHUNK = 1 << 16


class StreamLimit(VMStop):
    """Decompressed output passed a bound (rule archive/bomb)."""


class Unavailable(Exception):
    """The optional library that decodes this kind of stream is not installed."""

    def __init__(self, kind: str, package: str) -> None:
        super().__init__(f"{kind}: the optional package {package!r} is not installed")
        self.kind, self.package = kind, package


class Slice(RandomAccessReader):
    """A read-only, seekable window [start, start+length) of a shared parent stream."""

    def __init__(self, parent: IO[bytes], start: int, length: int) -> None:
        super().__init__()
        self.parent, self.start, self.size = parent, start, length

    def _read_at(self, pos: int, n: int) -> bytes:
        self.parent.seek(self.start + pos)
        return self.parent.read(n)


def buffered(raw: io.RawIOBase | io.BufferedIOBase, size: int = CHUNK) -> io.BufferedReader:
    return io.BufferedReader(raw, size)


def open_slice(parent: IO[bytes], start: int, length: int) -> io.BufferedReader:
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


class Tally:
    """Bytes decompressed so far by every stream of one scan: the size cap covers them all, so
    archives nested in archives cannot each inflate up to the cap."""

    def __init__(self) -> None:
        self.total = 0


class _Counted(io.RawIOBase):
    """Passes the compressed bytes through and counts how many the decompressor has taken."""

    def __init__(self, src: IO[bytes]) -> None:
        super().__init__()
        self.src, self.count = src, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        data = self.src.read(-1 if n is None else n)
        self.count += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class Decoded(Protocol):
    """What a decompressor gives: the stdlib's, zstandard's and lz4's readers and ours all fit."""

    def readinto(self, b: Any, /) -> int: ...


class _Capped(io.RawIOBase):
    """Counts what a decompressor yields; refuses more than `cap` bytes in all, or more than `ratio`
    x the compressed bytes consumed so far once past `ratio_floor` bytes of output.

    The ratio is checked as bytes inflate, against what was read, not against the member's whole
    compressed size: a bomb is stopped after about max(ratio_floor, ratio x one read) bytes.
    """

    def __init__(
        self,
        inner: Decoded,
        src: _Counted,
        cap: int,
        ratio: float,
        ratio_floor: int,
        budget: Budget | None,
        tally: Tally | None,
    ) -> None:
        super().__init__()
        self.inner, self.src, self.cap = inner, src, cap
        self.ratio, self.ratio_floor, self.budget, self.total = ratio, ratio_floor, budget, 0
        self.tally = tally or Tally()
        self.stopped: StreamLimit | None = None  # once over a bound, every later read fails the same

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.stopped is not None:
            raise self.stopped
        try:
            return self._readinto(b)
        except StreamLimit as exc:
            self.stopped = exc
            raise

    def _readinto(self, b: Any) -> int:
        try:
            n = self.inner.readinto(b)
        except _library_errors() as exc:  # corrupt zstd/lz4 data: a stream error like the others
            raise ValueError(f"{type(exc).__name__}: {exc}") from None
        self.total += n
        self.tally.total += n
        if self.tally.total > self.cap:
            raise StreamLimit(
                "archive/bomb",
                f"decompressed data exceeds {self.cap} bytes",
                limit=self.cap,
                limit_name="max_decompressed",
                decompressed=self.total,
            )
        read = max(self.src.count, 1)
        if self.total > self.ratio_floor and self.total > self.ratio * read:
            raise StreamLimit(
                "archive/bomb",
                f"compression ratio above {self.ratio:.0f}:1 ({self.total} bytes from the first {read})",
                ratio=round(self.total / read, 1),
                compressed=read,
                decompressed=self.total,
                limit=self.ratio,
                limit_name="max_ratio",
            )
        if self.budget is not None:
            self.budget.tick("decompressing")
        return n


@functools.cache
def _library_errors() -> tuple[type[BaseException], ...]:
    """What the optional decoders raise on corrupt data (lz4: RuntimeError)."""
    errors: list[type[BaseException]] = [RuntimeError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def decompressor(kind: str, src: IO[bytes]) -> Decoded:
    """kind: gzip | bzip2 | xz | lzma | zlib | deflate (raw, as in zip) | lzma-zip | zstd | lz4.
    zstd and lz4 need optional packages: `Unavailable` when they are missing."""
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
    if kind == "zstd":
        try:
            import zstandard
        except ImportError:
            raise Unavailable(kind, "zstandard") from None
        # the window is bounded by the library's default limit (128 MiB), whatever the frame asks;
        # the library's reader stops quietly inside a cut frame: _ZstdFrames makes that an error
        frames = _ZstdFrames(src)
        return zstandard.ZstdDecompressor().stream_reader(
            frames,  # type: ignore[arg-type]  # a RawIOBase reads as IO[bytes]
            read_size=CHUNK,
            read_across_frames=True,
        )
    if kind == "lz4":
        try:
            import lz4.frame
        except ImportError:
            raise Unavailable(kind, "lz4") from None
        return lz4.frame.LZ4FrameFile(src, "rb")
    raise ValueError(f"no decompressor for {kind}")


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


class _ZstdFrames(io.RawIOBase):
    """Passes a zstd stream through while walking its frame and block headers (RFC 8878), so
    that input ending inside a frame raises EOFError instead of decoding to fewer bytes (or none)."""

    def __init__(self, src: IO[bytes]) -> None:
        super().__init__()
        self.src, self.head = src, bytearray()
        self.walk = _zstd_walk()
        self.want, self.skip, self.boundary = next(self.walk)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.src.read(len(b))
        if not data:
            if not (self.boundary and not self.head):
                raise EOFError("zstd stream ends inside a frame (truncated)")
            return 0
        self._feed(data)
        b[: len(data)] = data
        return len(data)

    def _feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            take = min(self.want - len(self.head), len(data) - pos)
            if self.skip:  # block content: counted, not kept
                self.want -= take
                done = self.want == 0
            else:
                self.head += data[pos : pos + take]
                done = len(self.head) == self.want
            pos += take
            if done:
                got, self.head = bytes(self.head), bytearray()
                self.want, self.skip, self.boundary = self.walk.send(got)


def _zstd_walk() -> Any:
    """A generator fed the bytes it asks for: yields (count, skip, at a frame boundary)."""
    while True:
        magic = int.from_bytes((yield 4, False, True), "little")
        if magic in _ZSTD_SKIPPABLE:
            size = int.from_bytes((yield 4, False, False), "little")
            if size:
                yield size, True, False
            continue
        if magic != _ZSTD_MAGIC:
            raise ValueError(f"not a zstd frame (magic {magic:#010x})")
        fhd = (yield 1, False, False)[0]
        single = fhd >> 5 & 1
        fcs = (single, 2, 4, 8)[fhd >> 6]
        rest = (1 - single) + (0, 1, 2, 4)[fhd & 3] + fcs
        if rest:
            yield rest, False, False
        last = 0
        while not last:
            h = int.from_bytes((yield 3, False, False), "little")
            last, kind, size = h & 1, h >> 1 & 3, h >> 3
            if kind == 3:
                raise ValueError("zstd block of the reserved type")
            size = 1 if kind == 1 else size  # an RLE block stores one byte
            if size:
                yield size, True, False
        if fhd >> 2 & 1:
            yield 4, False, False  # content checksum


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
    compressed_size: int | None = None,
    *,
    cap: int,
    ratio: float,
    ratio_floor: int,
    budget: Budget | None,
    tally: Tally | None = None,
) -> io.BufferedReader:
    """`src` decompressed, within the bounds. `compressed_size` is informative only: the ratio is
    measured against the compressed bytes consumed so far (a member may lie about its size)."""
    counted = _Counted(src)
    inner = decompressor(kind, counted)  # type: ignore[arg-type]  # a RawIOBase reads as IO[bytes]
    return buffered(_Capped(inner, counted, cap, ratio, ratio_floor, budget, tally))


def spool(src: IO[bytes], cap: int, budget: Budget | None) -> IO[bytes]:
    """Copy a non-seekable stream into a temp file (memory up to 16 MB, then disk), bounded."""
    import tempfile  # (and random, shutil) only for the streams that need it

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
    return out


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
