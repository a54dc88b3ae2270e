"""Zip central directory, read the way torch's loader reads it, and checked the way a scanner must.

Only the end records, the central directory and each member's local header are read. Problems
(duplicate names aside, which the caller sees) are attached to entries as (rule, message, evidence):
local/central disagreement, encryption flag bits, members outside the archive body, and local
headers the directory does not list (streaming extractors read them, directory readers do not).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import IO, Any

from hfguard.budget import Budget


class ZipError(Exception):
    def __init__(self, rule: str, message: str, offset: int | None = None, **evidence: Any) -> None:
        super().__init__(message)
        self.rule, self.offset, self.evidence = rule, offset, evidence


@dataclass
class ZipEntry:
    index: int
    raw_name: bytes
    name: str
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    header_offset: int
    data_offset: int | None = None
    problems: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


ZIP_DIRECTORY = "zip-directory"   # ctx.file_facts key: (local headers checked?, the entries)


def file_zip_directory(file: Any, ctx: Any, *, local_headers: bool = True) -> list[ZipEntry]:
    """`read_zip_directory` of a scanned file (default bounds), read once per scan: the
    serialization, keras, skops and format-claim checks all need it. The entries are shared:
    read them, never change them. Errors are not kept (the next caller reads and sees them)."""
    facts = ctx.file_facts(file)
    got = facts.get(ZIP_DIRECTORY)
    if got is None or (local_headers and not got[0]):
        with file.open() as fh:
            entries = read_zip_directory(fh, file.size, budget=ctx.budget(), local_headers=local_headers)
        got = facts[ZIP_DIRECTORY] = (local_headers, entries)
    return got[1]


def read_zip_directory(
    fh: IO[bytes],
    size: int,
    *,
    max_members: int = 100_000,
    max_central_directory: int = 64 << 20,
    budget: Budget | None = None,
    local_headers: bool = True,
) -> list[ZipEntry]:
    """Central directory entries (zip64 aware), each checked against its local header, plus
    entries for local headers the directory does not list (see `_unlisted`). Without
    `local_headers` only the directory is read (names and sizes; no data offsets)."""
    tail_len = min(size, 65_557)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise ZipError("archive/malformed", "no end-of-central-directory record")
    eocd = size - tail_len + at
    _, _, _, total, cd_size, cd_offset, _ = struct.unpack("<HHHHIIH", tail[at + 4 : at + 22])
    if (
        (total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF)
        and at >= 20
        and tail[at - 20 : at - 16] == b"PK\x06\x07"
    ):
        (z64_at,) = struct.unpack("<Q", tail[at - 12 : at - 4])
        if z64_at + 56 > size:
            raise ZipError("archive/malformed", "zip64 end record outside the file", z64_at)
        fh.seek(z64_at)
        rec = fh.read(56)
        if rec[:4] != b"PK\x06\x06":
            raise ZipError("archive/malformed", "zip64 end record signature missing", z64_at)
        total, cd_size, cd_offset = struct.unpack("<QQQ", rec[32:56])
        eocd = z64_at
    if total > max_members:
        raise ZipError(
            "archive/too-many-members",
            f"{total} entries (bound {max_members})",
            limit=max_members,
            entries=total,
        )
    if cd_size > max_central_directory:
        raise ZipError(
            "pickle/limit-exceeded",
            f"central directory of {cd_size} bytes",
            limit=max_central_directory,
            limit_name="max_central_directory",
        )
    if cd_offset + cd_size > eocd:
        raise ZipError(
            "zip/out-of-bounds",
            "central directory overlaps its end record or the file end",
            cd_offset,
            cd_offset=cd_offset,
            cd_size=cd_size,
        )
    fh.seek(cd_offset)
    cd = fh.read(cd_size)
    entries: list[ZipEntry] = []
    pos = 0
    while pos + 46 <= len(cd) and cd[pos : pos + 4] == b"PK\x01\x02":
        (flags, method, crc, csize, usize, nlen, elen, clen, hoff) = _unpack_cd(cd, pos)
        raw = cd[pos + 46 : pos + 46 + nlen]
        extra = cd[pos + 46 + nlen : pos + 46 + nlen + elen]
        usize, csize, hoff = _zip64(extra, usize, csize, hoff)
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        entries.append(ZipEntry(len(entries), raw, name, flags, method, crc, csize, usize, hoff))
        pos += 46 + nlen + elen + clen
        if budget is not None and len(entries) & 0x3FF == 0:
            budget.tick("zip directory")
    if len(entries) != total:
        raise ZipError(
            "archive/malformed",
            f"central directory holds {len(entries)} entries, the end record says {total}",
            cd_offset,
            entries=len(entries),
            declared=total,
        )
    if not local_headers:
        return entries
    for e in entries:
        _check_local(fh, e, cd_offset)
    return entries + _unlisted(fh, entries, cd_offset, max_members)


def torch_data_pickles(entries: list[ZipEntry]) -> list[ZipEntry]:
    """The `<archive>/data.pkl` members torch.load unpickles (one in a well-formed checkpoint)."""
    return [e for e in entries if e.name.endswith("data.pkl") and e.name.count("/") == 1]


def is_torch_zip(fh: IO[bytes], size: int | None = None) -> bool:
    """A PyTorch zip checkpoint (or TorchScript archive): a zip whose directory names a data.pkl.
    Reads only the end records and the central directory; never `zipfile` on hostile input."""
    try:
        if size is None:
            size = fh.seek(0, 2)
        return bool(torch_data_pickles(read_zip_directory(fh, size, local_headers=False)))
    except (ZipError, OSError, ValueError, struct.error):
        return False


def _unlisted(fh: IO[bytes], entries: list[ZipEntry], cd_offset: int, max_members: int) -> list[ZipEntry]:
    """Local headers the central directory does not list: streaming extractors see them, directory
    readers do not, so a payload can hide there. Returned as extra entries to scan."""
    spans = sorted(
        (e.header_offset, e.data_offset + e.csize + (24 if e.flags & 0x8 else 0))
        for e in entries
        if e.data_offset is not None
    )
    found: list[ZipEntry] = []
    cursor = 0
    for start, end in [*spans, (cd_offset, cd_offset)]:
        if start - cursor > 0 and len(found) < max_members:
            fh.seek(cursor)
            # the descriptor slack may be shorter than 24 bytes: look for a header in the gap start
            window = fh.read(min(start - cursor, 64))
            at = window.find(b"PK\x03\x04")
            if at >= 0:
                e = ZipEntry(-1, b"", "", 0, 0, 0, 0, 0, cursor + at)
                _read_unlisted(fh, e, cd_offset)
                if e.data_offset is not None:
                    found.append(e)
            elif start - cursor > 24 and cursor > 0:
                e = ZipEntry(-1, b"", f"<gap@{cursor}>", 0, 0, 0, 0, 0, cursor)
                e.problems.append(
                    (
                        "zip/unlisted-data",
                        f"{start - cursor} bytes between members belong to no listed member",
                        {"offset": cursor, "bytes": start - cursor},
                    )
                )
                found.append(e)
        cursor = max(cursor, end)
    return found


def _read_unlisted(fh: IO[bytes], e: ZipEntry, cd_offset: int) -> None:
    fh.seek(e.header_offset)
    lh = fh.read(30)
    if len(lh) < 30:
        return
    _, _, flags, method, _, _, crc, csize, usize, nlen, elen = struct.unpack("<4sHHHHHIIIHH", lh)
    raw = fh.read(nlen)
    e.raw_name, e.name = raw, raw.decode("utf-8", "replace") + " (unlisted)"
    e.flags, e.method, e.crc, e.csize, e.usize = flags, method, crc, csize, usize
    e.problems.append(
        (
            "zip/unlisted-member",
            "a local header the central directory does not list "
            "(streaming extractors read it, directory readers do not)",
            {"header_offset": e.header_offset},
        )
    )
    start = e.header_offset + 30 + nlen + elen
    if flags & 0x8 or start + csize > cd_offset:
        # sizes unknown (data descriptor) or out of bounds: scan what lies up to the directory
        e.csize = e.usize = max(0, cd_offset - start)
        e.method = method if method in (0, 8) else 0
        e.crc = -1
    e.data_offset = start


def _unpack_cd(cd: bytes, pos: int) -> tuple[int, ...]:
    f = struct.unpack("<4sHHHHHHIIIHHHHHII", cd[pos : pos + 46])
    # sig made needed flags method time date crc csize usize nlen elen clen disk iattr eattr hoff
    return f[3], f[4], f[7], f[8], f[9], f[10], f[11], f[12], f[16]


def _zip64(extra: bytes, usize: int, csize: int, hoff: int) -> tuple[int, int, int]:
    i = 0
    while i + 4 <= len(extra):
        tag, ln = struct.unpack("<HH", extra[i : i + 4])
        body = extra[i + 4 : i + 4 + ln]
        if tag == 1:
            vals = [struct.unpack("<Q", body[j : j + 8])[0] for j in range(0, len(body) - 7, 8)]
            k = 0
            if usize == 0xFFFFFFFF and k < len(vals):
                usize, k = vals[k], k + 1
            if csize == 0xFFFFFFFF and k < len(vals):
                csize, k = vals[k], k + 1
            if hoff == 0xFFFFFFFF and k < len(vals):
                hoff = vals[k]
        i += 4 + ln
    return usize, csize, hoff


def _check_local(fh: IO[bytes], e: ZipEntry, cd_offset: int) -> None:
    if e.flags & 0x1 or e.flags & 0x40 or e.flags & 0x2000:
        e.problems.append(
            (
                "zip/flag-bits",
                f"general-purpose flags 0x{e.flags:04x} claim encryption; "
                "torch ignores them, so the member was scanned as plain data",
                {"flags": e.flags},
            )
        )
    if e.header_offset + 30 > cd_offset:
        e.problems.append(
            (
                "zip/out-of-bounds",
                "local header lies outside the archive body",
                {"header_offset": e.header_offset},
            )
        )
        return
    fh.seek(e.header_offset)
    lh = fh.read(30)
    if len(lh) < 30 or lh[:4] != b"PK\x03\x04":
        e.problems.append(("zip/header-mismatch", "no local header where the central directory points", {}))
        return
    _, _, lflags, lmethod, _, _, lcrc, lcsize, lusize, nlen, elen = struct.unpack("<4sHHHHHIIIHH", lh)
    lname = fh.read(nlen)
    lextra = fh.read(elen)
    mism: dict[str, Any] = {}
    if lname != e.raw_name:
        mism["name"] = [lname.decode("utf-8", "replace"), e.name]
    if lmethod != e.method:
        mism["method"] = [lmethod, e.method]
    if not (lflags & 0x8):  # without a data descriptor the local header carries the real values
        lusize, lcsize, _ = _zip64(lextra, lusize, lcsize, 0)
        if lcrc != e.crc:
            mism["crc"] = [f"{lcrc:08x}", f"{e.crc:08x}"]
        if lcsize != e.csize and lcsize != 0xFFFFFFFF:
            mism["compressed_size"] = [lcsize, e.csize]
        if lusize != e.usize and lusize != 0xFFFFFFFF:
            mism["size"] = [lusize, e.usize]
    if mism:
        e.problems.append(
            (
                "zip/header-mismatch",
                "local header disagrees with the central directory on " + ", ".join(mism),
                {"local_vs_central": mism},
            )
        )
    e.data_offset = e.header_offset + 30 + nlen + elen
    if e.data_offset + e.csize > cd_offset:
        e.problems.append(
            (
                "zip/out-of-bounds",
                "member data runs past the archive body",
                {"data_offset": e.data_offset, "compressed_size": e.csize},
            )
        )
        e.data_offset = None
