"""Zip archives (PyTorch zip checkpoints, .npz, nested zips): every member that is a pickle by
content is scanned, plus the zip's own consistency (duplicate names, local/central disagreement,
CRC, flag bits, bounds). Only the directory, local headers and member heads are read; tensor data
members a pickle names as storages are never read."""

from __future__ import annotations

from collections import Counter
from typing import IO, Any

from hfguard import sniff as sn
from hfguard.static.pickle.containers.common import (
    SCANNED_FORMATS,
    STREAM_ERRORS,
    Scanner,
    interesting,
    join,
    looks_like_pickle,
    pickle_member,
)
from hfguard.static.pickle.containers.torchscript import analyse_torchscript, is_torchscript
from hfguard.static.pickle.streams import CrcTap, buffered, open_decompressed, open_slice, spool
from hfguard.static.pickle.vm import PickleResult, VMStop
from hfguard.static.pickle.zipdir import ZipEntry, ZipError, read_zip_directory


def scan_zip(sc: Scanner, fh: IO[bytes], size: int | None, where: str, depth: int) -> None:
    if size is None:
        size = fh.seek(0, 2)
    try:
        entries = read_zip_directory(
            fh,
            size,
            max_members=sc.config.max_members,
            max_central_directory=sc.config.max_central_directory,
            budget=sc.budget,
        )
    except ZipError as exc:
        sc.observe(exc.rule, str(exc), where, exc.offset, exc.evidence)
        return
    if not where and not depth and sc.file_zip is None:
        sc.file_zip = entries
    names = Counter(e.raw_name for e in entries)
    for raw, n in names.items():
        if n > 1:
            sc.observe(
                "zip/duplicate-member",
                f"{n} central-directory entries named {raw.decode('utf-8', 'replace')!r}; "
                "loaders disagree on which one they read (all were scanned)",
                join(where, raw.decode("utf-8", "replace")),
                evidence={"count": n},
            )
    storage_keys: set[str] = set()
    # the pickles first (they name the storages), then everything else
    ordered = sorted(entries, key=lambda e: (not e.name.endswith(".pkl"), e.index))
    if is_torchscript(entries):
        analyse_torchscript(sc, entries, where, lambda e: member_stream(sc, fh, e)[0])
    for e in ordered:
        sc.budget.tick("scanning zip members")
        member_where = join(where, e.name)
        for rule, msg, ev in e.problems:
            sc.observe(rule, msg, member_where, e.header_offset, ev)
        if e.data_offset is None or e.usize == 0:
            continue
        _scan_member(sc, fh, e, member_where, depth, storage_keys)


def _scan_member(
    sc: Scanner, fh: IO[bytes], e: ZipEntry, where: str, depth: int, storage_keys: set[str]
) -> None:
    cfg = sc.config
    kind = METHODS.get(e.method, "?")
    if kind == "?":
        sc.observe(
            "archive/unsupported-compression",
            f"compression method {e.method} cannot be decoded; member unscanned",
            where,
            e.header_offset,
            {"method": e.method},
        )
        return
    assert e.data_offset is not None

    def open_member() -> tuple[IO[bytes], CrcTap | None]:
        return member_stream(sc, fh, e)

    if _storage_key(e.name) in storage_keys:
        return  # tensor bytes a pickle names as a storage: torch reads them as data, never unpickles
    try:
        stream, tap = open_member()
        head = stream.read(600)
    except STREAM_ERRORS as exc:
        sc.stream_error(exc, where, e.data_offset)
        return
    fmt = sn.sniff(head, e.name, e.usize)
    named_pickle = e.name.endswith(".pkl") and fmt not in SCANNED_FORMATS
    if named_pickle:  # torch unpickles <archive>/data.pkl whatever its first bytes look like
        fmt = sn.PICKLE
    if not interesting(fmt, head):
        return
    base = e.data_offset if kind is None else 0
    stream, tap = open_member()
    if kind is None:
        tap = CrcTap(stream)
        stream = buffered(tap)
    assert tap is not None
    results: list[PickleResult] = []
    try:
        if pickle_member(fmt, head):
            quiet = not (looks_like_pickle(head) or named_pickle)
            results = sc.scan_pickles(stream, e.usize, where, base, quiet=quiet)
            for r in results:
                storage_keys.update(_storage_keys(r.pids))
        elif fmt == sn.ZIP:
            inner = (
                open_slice(fh, e.data_offset, e.csize)
                if kind is None
                else spool(stream, cfg.max_decompressed, sc.budget)
            )
            sc.scan(inner, None, sn.ZIP, where, depth + 1)
            return  # a nested stored zip is read by its directory: no full CRC pass
        else:
            sc.scan(stream, e.usize, fmt, where, depth + 1, base)
        tap.drain(sc.budget)
        if tap.count == e.usize and e.crc >= 0 and (tap.crc & 0xFFFFFFFF) != e.crc:
            sc.observe(
                "zip/bad-crc",
                f"CRC-32 {tap.crc:08x} does not match the directory's {e.crc:08x} "
                "(Python's zipfile refuses this member; torch may load it)",
                where,
                e.header_offset,
                {"crc": f"{tap.crc:08x}", "expected": f"{e.crc:08x}"},
            )
        elif tap.count != e.usize and e.crc >= 0:
            sc.observe(
                "zip/header-mismatch",
                f"member holds {tap.count} bytes, the directory says {e.usize}",
                where,
                e.header_offset,
                {"actual": tap.count, "declared": e.usize},
            )
    except STREAM_ERRORS as exc:
        if not _reported(exc, results):  # a bound the pickle scan already hit, met again by the CRC pass
            sc.stream_error(exc, where, e.data_offset)


METHODS = {0: None, 8: "deflate", 12: "bzip2", 14: "lzma-zip"}  # zip method -> decompressor kind


def member_stream(sc: Scanner, fh: IO[bytes], e: ZipEntry) -> tuple[IO[bytes], CrcTap | None]:
    """A member's bytes, decompressed within the scan's bounds (a CRC tap when compressed).
    The member must have a data offset and a method in METHODS."""
    assert e.data_offset is not None
    kind = METHODS[e.method]
    raw = open_slice(fh, e.data_offset, e.csize)
    if kind is None:
        return raw, None
    cfg = sc.config
    tap = CrcTap(
        open_decompressed(
            kind,
            raw,
            e.csize,
            cap=cfg.max_decompressed,
            ratio=cfg.max_ratio,
            ratio_floor=cfg.ratio_floor,
            budget=sc.budget,
            tally=sc.tally,
        )
    )
    return buffered(tap), tap


def _reported(exc: BaseException, results: list[PickleResult]) -> bool:
    if not isinstance(exc, VMStop):
        return False
    return any(a.rule == exc.rule and a.message == exc.message for r in results for a in r.anomalies)


def _storage_key(name: str) -> str:
    parts = name.split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "data" else ""


def _storage_keys(pids: list[Any]) -> set[str]:
    return {str(p[2]) for p in pids if isinstance(p, tuple) and len(p) >= 3 and p[0] == "storage"}
