"""7z archives (nullifAI-style: a torch pickle compressed with 7z instead of zip), read with the
optional `py7zr` (the `static` extra); without it a 7z file is `archive/unscannable`.

Bounds: the sizes the headers declare (py7zr never decodes more than a member's declared size)
are checked against the cap and the ratio before anything is decoded; while decoding, output is
counted against the cap and against the archive bytes read so far, as for zip members. py7zr's own
loop asks its decoders for up to 128 MB at a time (and its deflate ignores the request), so ours
replaces it (`_BoundedWorker`): small compressed reads, small output steps, each counted as it
comes. Each member is spooled (memory up to 16 MiB, then disk) and scanned when py7zr finishes it.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import IO, Any

from hfguard import sniff as sn
from hfguard.budget import BudgetExceeded
from hfguard.static.pickle.containers.common import (
    STREAM_ERRORS,
    Scanner,
    interesting,
    join,
    looks_like_pickle,
    pickle_member,
)
from hfguard.static.pickle.containers.compressed import unscannable
from hfguard.static.pickle.peek import is_seekable
from hfguard.static.pickle.streams import StreamLimit, spool
from hfguard.static.pickle.vm import VMStop


def scan_7z(sc: Scanner, fh: IO[bytes], size: int | None, where: str, depth: int) -> None:
    try:
        import py7zr
        from py7zr.io import Py7zIO, WriterFactory
    except ImportError:
        unscannable(sc, "7z", where, 0, "the optional package 'py7zr' is not installed")
        return
    cfg = sc.config
    if not is_seekable(fh):
        fh = spool(fh, cfg.max_decompressed, sc.budget)
    if size is None:
        size = fh.seek(0, 2)
    fh.seek(0)
    src = _CountedFile(fh)

    class Member(Py7zIO):
        """Receives one member's decoded bytes; scans them when py7zr closes it."""

        def __init__(self, name: str) -> None:
            import tempfile

            self.name, self.total = name, 0
            self.spool = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # noqa: SIM115 - closed in close()

        def write(self, s: bytes | bytearray) -> int:
            self.total += len(s)
            sc.tally.total += len(s)
            _bounds(sc, sc.tally.total, src.count)
            sc.budget.tick("decompressing 7z")
            return self.spool.write(s)

        def read(self, size: int | None = None) -> bytes:
            return self.spool.read(-1 if size is None else size)

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.spool.seek(offset, whence)

        def flush(self) -> None:
            self.spool.flush()

        def size(self) -> int:
            return self.total

        def close(self) -> None:
            try:
                self.spool.seek(0)
                _scan_member(sc, self.spool, self.total, join(where, self.name), depth)
            finally:
                self.spool.close()

    class Factory(WriterFactory):
        def create(self, filename: str) -> Py7zIO:
            return Member(filename)

    try:
        # a RawIOBase is a binary file, though not an IO[bytes] to typeshed
        _header_bound(src, size, cfg.max_central_directory)  # type: ignore[arg-type]
        with py7zr.SevenZipFile(src, "r") as archive:  # type: ignore[arg-type]
            archive.worker = _bounded_worker(archive)
            files = archive.list()
            if len(files) > cfg.max_members:
                sc.observe(
                    "archive/too-many-members",
                    f"{len(files)} 7z members (bound {cfg.max_members})",
                    where,
                    evidence={"limit": cfg.max_members, "entries": len(files)},
                )
                return
            if archive.needs_password():
                unscannable(sc, "7z", where, 0, "its content is encrypted")
                return
            declared = sum(f.uncompressed or 0 for f in files)
            _bounds(sc, declared, size, declared=True)
            archive.extractall(factory=Factory())
    except (StreamLimit, VMStop) as exc:
        sc.stream_error(exc, where, None)
    except BudgetExceeded:
        raise
    except py7zr.exceptions.UnsupportedCompressionMethodError as exc:
        unscannable(sc, "7z", where, 0, f"unsupported method: {exc}")
    except Exception as exc:  # noqa: BLE001 - a third-party parser on hostile input: any error is malformed
        sc.observe("archive/malformed", f"cannot read 7z: {type(exc).__name__}: {exc}", where)


def _header_bound(fh: IO[bytes], size: int, cap: int) -> None:
    """py7zr decodes a compressed ("encoded") header whole, up to 256 MB, while opening the archive:
    read its declared size first (start header, then the header's own streams info) and refuse
    more than `cap`, as for a zip's central directory."""
    from py7zr.archiveinfo import HeaderStreamsInfo

    fh.seek(0)
    start = fh.read(32)
    if len(start) < 32:
        return  # py7zr says what is wrong
    offset, length = struct.unpack("<QQ", start[12:28])
    if length > cap:
        raise StreamLimit("pickle/limit-exceeded", f"7z header of {length} bytes", limit=cap,
                          limit_name="max_central_directory")
    if not 0 < length <= size - 32 - offset:
        return
    fh.seek(32 + offset)
    if fh.read(1) != b"\x17":  # kEncodedHeader
        return
    streams = HeaderStreamsInfo.retrieve(io.BytesIO(fh.read(length - 1)))
    declared = sum(f.unpacksizes[-1] for f in streams.unpackinfo.folders if f.unpacksizes)
    if declared > cap:
        raise StreamLimit("archive/bomb", f"the 7z header declares {declared} bytes once decoded "
                          f"(bound {cap})", limit=cap, limit_name="max_central_directory",
                          decompressed=declared)
    fh.seek(0)


READ_STEP = 4 << 10  # compressed bytes a decoder gets per step: deflate makes at most ~4 MiB of them
OUTPUT_STEP = 1 << 20  # decoded bytes asked for per step (LZMA, LZMA2, bzip2 keep to it)


def _bounded_worker(archive: Any) -> Any:
    """py7zr's extraction worker with a decode loop that keeps every step small (see the module
    doc). Built on py7zr's Worker: the rest of its extraction (folders, CRCs) is unchanged."""
    from py7zr.exceptions import Bad7zFile, CrcError
    from py7zr.py7zr import Worker

    class BoundedWorker(Worker):
        def decompress(
            self, fp: IO[bytes], folder: Any, fq: Any, size: int, compressed_size: int | None,
            src_end: int, q: Any = None,
        ) -> int:
            decoder = folder.get_decompressor(compressed_size)
            decoder.block_size = READ_STEP
            remaining, crc = size, 0
            while remaining > 0:
                at = fp.tell()
                out = decoder.decompress(fp, min(remaining, OUTPUT_STEP))
                if out:
                    remaining -= len(out)
                    fq.write(out)  # counted (and bounded) by the member as it arrives
                    crc = zlib.crc32(out, crc)
                elif fp.tell() == at:
                    raise Bad7zFile("a 7z stream ends before its declared size")
            if fp.tell() >= src_end and decoder.crc is not None and not decoder.check_crc():
                raise CrcError(decoder.crc, decoder.digest, None)
            return crc

    return BoundedWorker(archive.files, archive.afterheader, archive.header)


def _bounds(sc: Scanner, output: int, read: int, declared: bool = False) -> None:
    cfg = sc.config
    what = "declared" if declared else "decompressed"
    if output > cfg.max_decompressed:
        raise StreamLimit(
            "archive/bomb",
            f"{what} data exceeds {cfg.max_decompressed} bytes",
            limit=cfg.max_decompressed,
            limit_name="max_decompressed",
            decompressed=output,
        )
    read = max(read, 1)
    if output > cfg.ratio_floor and output > cfg.max_ratio * read:
        raise StreamLimit(
            "archive/bomb",
            f"compression ratio above {cfg.max_ratio:.0f}:1 ({output} bytes {what} from {read})",
            ratio=round(output / read, 1),
            compressed=read,
            decompressed=output,
            limit=cfg.max_ratio,
            limit_name="max_ratio",
        )


def _scan_member(sc: Scanner, stream: IO[bytes], size: int, where: str, depth: int) -> None:
    head = stream.read(600)
    stream.seek(0)
    name = where.rsplit("!", 1)[-1]
    fmt = sn.sniff(head, name, size)
    named_pickle = name.endswith(".pkl") and fmt not in (sn.ZIP, sn.TAR, sn.SEVENZIP)
    if not (interesting(fmt, head) or named_pickle):
        return
    try:
        if named_pickle or pickle_member(fmt, head):
            quiet = not (looks_like_pickle(head) or named_pickle)
            sc.scan_pickles(stream, size, where, quiet=quiet)
        else:
            sc.scan(stream, size, fmt, where, depth + 1)
    except STREAM_ERRORS as exc:
        sc.stream_error(exc, where, None)


class _CountedFile(io.RawIOBase):
    """A seekable file whose bytes read are counted (the compressed side of the ratio)."""

    def __init__(self, fh: IO[bytes]) -> None:
        super().__init__()
        self.fh, self.count = fh, 0

    def readinto(self, b: Any) -> int:
        data = self.fh.read(len(b))
        self.count += len(data)
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True
