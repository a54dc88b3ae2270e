"""tar: torch's old tar checkpoints and generic tar, every member sniffed by content."""

from __future__ import annotations

import tarfile
from typing import IO

from hfguard import sniff as sn
from hfguard.static.pickle.containers.common import (
    Scanner,
    interesting,
    join,
    looks_like_pickle,
    pickle_member,
)
from hfguard.static.pickle.containers.legacy import scan_torch_tar_records
from hfguard.static.pickle.peek import Prefixed, is_seekable
from hfguard.static.pickle.streams import buffered, spool
from hfguard.static.pickle.vm import VMStop


def scan_tar(sc: Scanner, fh: IO[bytes], where: str, depth: int) -> None:
    cfg = sc.config
    seekable = is_seekable(fh)
    try:
        tf = tarfile.open(fileobj=fh, mode="r:" if seekable else "r|")  # noqa: SIM115
    except (tarfile.TarError, OSError, EOFError) as exc:
        sc.observe("archive/malformed", f"cannot read tar: {exc}", where)
        return
    count = 0
    try:
        while (m := tf.next()) is not None:
            count += 1
            if count > cfg.max_members:
                sc.observe(
                    "archive/too-many-members",
                    f"more than {cfg.max_members} tar members",
                    where,
                    evidence={"limit": cfg.max_members},
                )
                return
            sc.budget.tick("tar members")
            if not m.isfile() or m.size == 0:
                continue
            ef = tf.extractfile(m)
            if ef is None:
                continue
            mwhere = join(where, m.name)
            head = ef.read(600)
            fmt = sn.sniff(head, m.name, m.size)
            if not interesting(fmt, head):
                continue
            if seekable:
                ef.seek(0)
                stream: IO[bytes] = ef
            else:
                stream = buffered(Prefixed(head, ef))
            if m.name in ("storages", "tensors") and looks_like_pickle(head):
                scan_torch_tar_records(sc, stream, m.size, mwhere, m.name)
            elif fmt == sn.ZIP:
                inner = stream if seekable else spool(stream, cfg.max_decompressed, sc.budget)
                sc.scan(inner, m.size, sn.ZIP, mwhere, depth + 1)
            elif pickle_member(fmt, head):
                sc.scan_pickles(
                    stream,
                    m.size,
                    mwhere,
                    m.offset_data,
                    quiet=not looks_like_pickle(head),
                )
            else:
                sc.scan(stream, m.size, fmt, mwhere, depth + 1, m.offset_data)
    except (tarfile.TarError, OSError, EOFError) as exc:
        sc.observe("archive/malformed", f"cannot read tar: {exc}", where)
    except VMStop as exc:
        sc.stream_error(exc, where, None)
