"""What every container reader shares: the bounds, the pickle site record, format sets and names."""

from __future__ import annotations

import lzma
import re
import struct
import zlib
from dataclasses import dataclass
from typing import IO, Any, Protocol

from hfguard import sniff as sn
from hfguard.budget import Budget
from hfguard.findings import Observation, Severity
from hfguard.static.pickle.streams import Tally
from hfguard.static.pickle.vm import Global, Limits, PickleResult, VMStop

STREAM_ERRORS = (VMStop, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, struct.error)
COMPRESSED = {
    sn.GZIP: "gzip",
    sn.BZIP2: "bzip2",
    sn.XZ: "xz",
    sn.LZMA: "lzma",
    sn.ZLIB: "zlib",
    sn.ZSTD: "zstd",
    sn.LZ4: "lz4",
}
ARCHIVES = {sn.ZIP, sn.TAR, sn.NUMPY, sn.TORCH_LEGACY, sn.SEVENZIP}  # containers with their own reader
SCANNED_FORMATS = {sn.PICKLE, *ARCHIVES, *COMPRESSED}
_PICKLE_FIRST = set(b"(}]acdefghijlpqrstuvwxyzIJKLMNPQRSTUVX\x80\x8a\x8b\x8c\x8d\x8e\x8f\x93\x94\x95GFBC.0")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
UNSCANNABLE = {b"Rar!\x1a\x07": "rar"}  # archives hfguard has no reader for


@dataclass
class PickleSite:
    where: str  # "" for the file itself, else the member chain ("a.zip!archive/data.pkl")
    result: PickleResult


@dataclass
class Delegation:
    """A call of a loader whose argument was scanned as a file of its own (`embedded.py`): the
    loader's global is judged by what that scan found (`sites`/`observations` index ranges)."""

    global_id: int  # id() of the Global the call invokes
    sites: range
    observations: range
    judged: bool  # False: the argument could not be judged (not bytes, not a torch checkpoint)


@dataclass(frozen=True)
class ScanConfig:
    limits: Limits = Limits()
    quiet_limits: Limits = Limits(max_opcodes=200_000, max_bytes=64 << 20)
    max_depth: int = 4
    max_members: int = 100_000
    max_central_directory: int = 64 << 20
    max_decompressed: int = 4 << 30
    max_ratio: float = 200.0
    # the ratio bound applies past this many output bytes: below it all-zero tensors deflate at
    # ~1000:1 in honest files, and inflating it is cheap (streamed, never held)
    ratio_floor: int = 64 << 20
    max_pickles: int = 64


def looks_like_pickle(head: bytes) -> bool:
    """PROTO 2-5: a pickle for certain (or a broken one, which is a finding)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def may_be_pickle(head: bytes) -> bool:
    """Could be a protocol 0/1 pickle: tried quietly, reported only if it parses with globals."""
    return bool(head) and head[0] in _PICKLE_FIRST


def member_location(where: str, offset: int | None, index: int | None = None) -> str:
    """Where in a container: the member chain, the byte offset, the opcode index."""
    parts = [f"member {where}"] if where else []
    if offset is not None:
        parts.append(f"offset {offset}")
    if index:
        parts.append(f"opcode {index}")
    return ", ".join(parts) or "file"


def join(where: str, name: str) -> str:
    return f"{where}!{name}" if where else name


def unscannable_kind(head: bytes) -> str | None:
    """The archive kind hfguard cannot open that `head` starts with, if any."""
    for magic, kind in UNSCANNABLE.items():
        if head.startswith(magic):
            return kind
    return None


def pickle_member(fmt: str, head: bytes) -> bool:
    unscannable = unscannable_kind(head) is not None
    return not unscannable and (fmt == sn.PICKLE or (fmt not in SCANNED_FORMATS and may_be_pickle(head)))


def interesting(fmt: str, head: bytes) -> bool:
    """Worth a look: a container we open, a possible pickle, or an archive we must report."""
    return fmt in SCANNED_FORMATS or may_be_pickle(head) or unscannable_kind(head) is not None


def importable(g: Global) -> bool:
    """Names an import could resolve; a text file misread as GLOBAL yields names that cannot."""
    return bool(_IDENTIFIER.fullmatch(g.module) and _IDENTIFIER.fullmatch(g.name))


# element sizes of legacy storage classes (torch.FloatStorage ...), for raw storage sections
STORAGE_ELEMENT = {
    "Double": 8,
    "Float": 4,
    "Half": 2,
    "Long": 8,
    "Int": 4,
    "Short": 2,
    "Char": 1,
    "Byte": 1,
    "Bool": 1,
    "BFloat16": 2,
    "ComplexDouble": 16,
    "ComplexFloat": 8,
    "QUInt8": 1,
    "QInt8": 1,
    "QInt32": 4,
    "QUInt4x2": 1,
    "QUInt2x4": 1,
    "Untyped": 1,
}


class Scanner(Protocol):
    """What a container reader needs from the dispatcher (`scanner.ContainerScanner`)."""

    config: ScanConfig
    budget: Budget
    depth: int
    last_fh: Any
    sites: list[PickleSite]
    observations: list[Observation]
    delegations: list[Delegation]
    script_classes: dict[str, set[str]]
    tally: Tally
    file_zip: list[Any] | None   # the file's own zip directory (zipdir.ZipEntry), when it is one

    def observe(
        self,
        rule: str,
        message: str,
        where: str,
        offset: int | None = None,
        evidence: dict[str, Any] | None = None,
        severity: Severity | None = None,
    ) -> None: ...

    def stream_error(self, exc: BaseException, where: str, offset: int | None) -> None: ...

    def scan(
        self, fh: IO[bytes], size: int | None, fmt: str, where: str = "", depth: int = 0, base: int = 0
    ) -> None: ...

    def scan_pickles(
        self,
        fh: IO[bytes],
        size: int | None,
        where: str,
        base: int = 0,
        *,
        quiet: bool = False,
        max_pickles: int | None = None,
        trailing_ok: bool = False,
    ) -> list[PickleResult]: ...
