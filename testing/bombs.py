"""Decompression bombs built the published way (deflate of zeros, members repeated, archives
nested), cheaply: a compressed block of zeros is made once and repeated, so a 10 GB bomb costs
milliseconds to build."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib

_MB = 1 << 20


def pickle_of_zeros(n: int) -> tuple[bytes, bytes]:
    """(head, tail) around n zero bytes: a protocol-4 pickle of one BINBYTES8 of n zeros."""
    return b"\x80\x04\x8e" + struct.pack("<Q", n), b"."


def deflate_zeros(n_mb: int, head: bytes = b"", tail: bytes = b"") -> bytes:
    """A raw deflate stream of head + n_mb MiB of zeros + tail. After a full flush the compressor
    starts afresh, so every 1 MiB block of zeros compresses to the same bytes: made once, repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(_MB)) + c.flush(zlib.Z_FULL_FLUSH)
    last = c.compress(tail) + c.flush()
    return first + block * n_mb + last


def gzip_bomb(n_mb: int, head: bytes = b"", tail: bytes = b"") -> bytes:
    """A valid multi-member gzip (gzip readers concatenate members): head, n_mb members of 1 MiB of
    zeros (~1000:1 each, with their real CRCs), tail."""
    member = gzip.compress(bytes(_MB), compresslevel=9, mtime=0)
    return gzip.compress(head, mtime=0) + member * n_mb + gzip.compress(tail, mtime=0)


def zip64_member_zip(name: str, deflated: bytes, usize: int, crc: int = 0) -> bytes:
    """A one-member zip whose member is the given raw deflate stream, sizes in a zip64 extra (so
    usize may exceed 4 GiB). The CRC is the caller's (0 for a bomb: a scan must stop before it)."""
    raw = name.encode()
    extra_local = struct.pack("<HHQQ", 1, 16, usize, len(deflated))
    local = (
        struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                    len(raw), len(extra_local))
        + raw + extra_local
    )
    cd_offset = len(local) + len(deflated)
    extra_cd = struct.pack("<HHQQ", 1, 16, usize, len(deflated))
    central = (
        struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 45, 45, 0, 8, 0, 0, crc, 0xFFFFFFFF,
                    0xFFFFFFFF, len(raw), len(extra_cd), 0, 0, 0, 0, 0)
        + raw + extra_cd
    )
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), cd_offset, 0)
    return local + deflated + central + eocd


def nested_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip of the given (already built) archives, deflated: the 42.zip layering."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return out.getvalue()
