"""Member bytes of a hostile zip, read through `zipdir` entries: stored members as a window of
the archive, compressed ones decoded lazily within a byte cap and the usual inflation ratio, sizes
and CRC checked as the loaders' own zipfile would. The one way format checks (keras, skops) read a
zip member; never stdlib zipfile on hostile input."""

from __future__ import annotations

import lzma
import struct
import zlib
from typing import IO, BinaryIO

from hfguard.budget import Budget
from hfguard.static.pickle.containers.common import ScanConfig
from hfguard.static.pickle.containers.torch_zip import METHODS
from hfguard.static.pickle.streams import StreamLimit, open_decompressed, open_slice
from hfguard.static.pickle.zipdir import ZipEntry, ZipError

# what reading a member can raise besides StreamLimit (the cap or ratio was hit)
MEMBER_ERRORS = (ZipError, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, struct.error)


def open_member(fh: BinaryIO, entry: ZipEntry, cap: int, budget: Budget) -> IO[bytes]:
    """A member's bytes, refused past `cap` bytes or the usual ratio (StreamLimit)."""
    for rule, message, _ in entry.problems:  # zipfile refuses these, or reads other bytes
        raise ZipError(rule, f"{entry.name}: {message}")
    if entry.data_offset is None:
        raise ZipError("archive/malformed", f"{entry.name}: no member data")
    kind = METHODS.get(entry.method, "?")
    if kind == "?":
        raise ZipError("archive/unsupported-compression", f"compression method {entry.method}")
    raw = open_slice(fh, entry.data_offset, entry.csize)
    if kind is None:
        return raw
    cfg = ScanConfig()
    return open_decompressed(kind, raw, entry.csize, cap=cap, ratio=cfg.max_ratio,
                             ratio_floor=min(cfg.ratio_floor, cap), budget=budget)


def check_member_size(entry: ZipEntry, actual: int) -> None:
    if actual != entry.usize:
        raise ZipError("zip/header-mismatch", f"{entry.name} holds {actual} bytes, the directory says "
                       f"{entry.usize} (zipfile, which the loaders use, refuses it)")


def read_member(fh: BinaryIO, entry: ZipEntry, cap: int, budget: Budget) -> bytes:
    """The whole member (at most `cap` bytes), its size and CRC-32 checked against the directory."""
    data = open_member(fh, entry, cap, budget).read(cap + 1)
    if len(data) > cap:
        raise StreamLimit("archive/bomb", f"{entry.name} inflates past {cap} bytes")
    check_member_size(entry, len(data))
    if zlib.crc32(data) != entry.crc:
        raise ZipError("zip/bad-crc", f"{entry.name}: CRC-32 does not match the directory's")
    return data
