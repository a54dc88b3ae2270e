"""Single-stream compression wrappers (gzip, bzip2, xz, lzma, zlib) around a pickle or an archive,
decoded within the size and ratio bounds; archives hfguard cannot open are a finding."""

from __future__ import annotations

from typing import IO

from hfguard import sniff as sn
from hfguard.static.pickle.containers.common import STREAM_ERRORS, Scanner, interesting, join
from hfguard.static.pickle.streams import Unavailable, open_decompressed, spool


def scan_compressed(
    sc: Scanner, fh: IO[bytes], size: int | None, kind: str, where: str, depth: int
) -> None:
    cfg = sc.config
    inner_where = join(where, f"<{kind}>")
    try:
        stream = open_decompressed(
            kind,
            fh,
            size,
            cap=cfg.max_decompressed,
            ratio=cfg.max_ratio,
            ratio_floor=cfg.ratio_floor,
            budget=sc.budget,
            tally=sc.tally,
        )
        head = stream.peek(600)[:600]
        fmt = sn.sniff(head, "", None)
        if fmt == sn.ZIP:
            inner = spool(stream, cfg.max_decompressed, sc.budget)
            sc.scan(inner, None, sn.ZIP, inner_where, depth + 1)
        elif interesting(fmt, head):
            sc.scan(stream, None, fmt, inner_where, depth + 1)
    except Unavailable as exc:
        unscannable(sc, kind, where, 0, f"the optional package {exc.package!r} is not installed")
    except STREAM_ERRORS as exc:
        sc.stream_error(exc, inner_where, None)


def scan_archive(
    sc: Scanner, fh: IO[bytes], size: int | None, kind: str, where: str, depth: int, base: int
) -> None:
    """An archive kind hfguard has no reader for: whatever it holds is unscanned."""
    unscannable(sc, kind, where, base, "hfguard has no reader for it")


def unscannable(sc: Scanner, kind: str, where: str, offset: int | None, why: str) -> None:
    msg = f"{kind} archive: hfguard cannot open it ({why}), so whatever it holds is unscanned"
    sc.observe("archive/unscannable", msg, where, offset, {"format": kind})
