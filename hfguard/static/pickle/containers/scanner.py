"""The dispatcher: state shared by the readers (findings, pickle sites, depth, budget) and the
choice of reader for a stream sniffed as a given format. Each container kind has its own module."""

from __future__ import annotations

import dataclasses
import re
from typing import IO, Any

from hfguard import sniff as sn
from hfguard.budget import Budget
from hfguard.findings import Observation, Severity
from hfguard.static.pickle.containers.common import (
    ARCHIVES,
    COMPRESSED,
    Delegation,
    PickleSite,
    ScanConfig,
    importable,
    looks_like_pickle,
    may_be_pickle,
    member_location,
    unscannable_kind,
)
from hfguard.static.pickle.containers.compressed import scan_archive, scan_compressed
from hfguard.static.pickle.containers.embedded import blob_opener, scan_embedded
from hfguard.static.pickle.containers.joblib import array_hook, is_zf, scan_zf
from hfguard.static.pickle.containers.legacy import scan_legacy
from hfguard.static.pickle.containers.npy import scan_npy
from hfguard.static.pickle.containers.sevenzip import scan_7z
from hfguard.static.pickle.containers.tar import scan_tar
from hfguard.static.pickle.containers.torch_zip import scan_zip
from hfguard.static.pickle.peek import is_seekable, peek
from hfguard.static.pickle.streams import Tally
from hfguard.static.pickle.vm import Anomaly, Limits, PickleResult, PickleVM, Reader, VMStop, scan_stream
from hfguard.static.pickle.zipdir import ZipEntry

_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # LONG1 0x1950a86a20f9469cfc6c

QUIET_LIMIT_MIN_OPCODES = 16   # valid opcodes before a limit that make quiet "text" a pickle


class ContainerScanner:
    def __init__(self, config: ScanConfig | None = None, budget: Budget | None = None) -> None:
        self.config = config or ScanConfig()
        self.budget = budget or Budget(seconds=1e9)
        # structural evidence; no severity: signatures/pickle_globals.yaml rates each rule id
        self.observations: list[Observation] = []
        self.last_fh: Any = None  # the stream the last pickle scan ended on (a peek may wrap it)
        self.depth = 0
        self.sites: list[PickleSite] = []
        self.delegations: list[Delegation] = []  # loaders judged by the scan of their argument
        # TorchScript archive (its `where`) -> the __torch__ classes its own code defines
        self.script_classes: dict[str, set[str]] = {}
        self.tally = Tally()  # bytes decompressed by every stream of this scan (max_decompressed)
        # the file's own first pickle, kept even when a quiet scan found text rather than a pickle:
        # whether a text file is a whole protocol-0 pickle is asked again by the format claims
        self.first_pickle: PickleResult | None = None
        self.file_zip: list[ZipEntry] | None = None  # the file's own zip directory, when it is one

    def observe(
        self,
        rule: str,
        message: str,
        where: str,
        offset: int | None = None,
        evidence: dict[str, Any] | None = None,
        severity: Severity | None = None,
    ) -> None:
        """`severity` None: rated by the structural section of signatures/pickle_globals.yaml."""
        location = member_location(where, offset)
        self.observations.append(Observation(rule, severity, message, location, evidence or {}))

    def stream_error(self, exc: BaseException, where: str, offset: int | None) -> None:
        if isinstance(exc, VMStop):
            self.observe(exc.rule, exc.message, where, offset, exc.evidence)
        else:
            self.observe("archive/malformed", f"cannot read: {type(exc).__name__}: {exc}", where, offset)

    # -- entry -------------------------------------------------------------------------------------
    def scan(
        self, fh: IO[bytes], size: int | None, fmt: str, where: str = "", depth: int = 0, base: int = 0
    ) -> None:
        """Scan a stream sniffed as `fmt`. `base` is the stream's absolute offset (for locations)."""
        if depth > self.config.max_depth:
            self.observe(
                "archive/depth-exceeded",
                f"archives nested deeper than {self.config.max_depth}",
                where,
                evidence={"limit": self.config.max_depth},
            )
            return
        self.budget.tick("scanning containers")
        outer, self.depth = self.depth, depth
        try:
            self._dispatch(fh, size, fmt, where, depth, base)
        finally:
            self.depth = outer

    def _dispatch(self, fh: IO[bytes], size: int | None, fmt: str, where: str, depth: int, base: int) -> None:
        if fmt not in ARCHIVES and fmt not in COMPRESSED:
            kind = unscannable_kind(peek(fh, 8))
            if kind is not None:
                scan_archive(self, fh, size, kind, where, depth, base)
                return
        if fmt in (sn.TAR, sn.SAFETENSORS) and may_be_pickle(peek(fh, 1)) and is_seekable(fh):
            # a polyglot: a tar whose first member name, or a "safetensors" header length, is also
            # a pickle that pickle.load would run
            self.scan_pickles(fh, size, where, base, quiet=True)
            fh.seek(0)
        if fmt == sn.ZIP:
            scan_zip(self, fh, size, where, depth)
        elif fmt == sn.TORCH_LEGACY:
            scan_legacy(self, fh, size, where, base)
        elif fmt == sn.TAR:
            scan_tar(self, fh, where, depth)
        elif fmt == sn.SEVENZIP:
            scan_7z(self, fh, size, where, depth)
        elif fmt == sn.NUMPY:
            scan_npy(self, fh, size, where, base)
        elif fmt in COMPRESSED:
            scan_compressed(self, fh, size, COMPRESSED[fmt], where, depth)
        elif fmt == sn.PICKLE:
            head = peek(fh, 32)
            if head[:1] == b"\x80" and 2 <= head.find(_LEGACY_MAGIC) <= 11:  # legacy torch, any protocol
                scan_legacy(self, fh, size, where, base)
            else:
                self.scan_pickles(fh, size, where, base, quiet=not looks_like_pickle(head))
        elif fmt == sn.SAFETENSORS:
            return  # tried above as a polyglot; the header itself has its own check
        elif is_zf(peek(fh, 22)):
            scan_zf(self, fh, size, where, depth)
        else:  # text / unknown whose first byte is an opcode: a protocol 0 pickle in disguise?
            self.scan_pickles(fh, size, where, base, quiet=True)

    # -- pickles -----------------------------------------------------------------------------------
    def _run_vm(self, fh: IO[bytes], size: int | None, where: str, base: int, limits: Limits,
                sites: list[PickleSite], max_pickles: int | None) -> tuple[list[PickleResult], Any]:
        reader = Reader(fh, base=base, size=size, budget=self.budget)
        vm = PickleVM(limits, self.budget, build_hook=array_hook(self, where, sites, limits))
        results, trailing = scan_stream(reader, vm, max_pickles or self.config.max_pickles)
        self.last_fh = reader.fh  # a non-seekable peek may have wrapped it
        return results, trailing

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
    ) -> list[PickleResult]:
        limits = self.config.quiet_limits if quiet else self.config.limits
        open_blob = blob_opener(fh, base)  # before the scan moves fh
        start = fh.tell() if quiet and is_seekable(fh) else None
        sites: list[PickleSite] = []
        results, trailing = self._run_vm(fh, size, where, base, limits, sites, max_pickles)
        if start is not None and any(_overlong_argument(a) for r in results for a in r.anomalies):
            # a text opcode's argument longer than the line limit: read on as pickle.load would
            # (bounded by the quiet byte cap) before deciding whether this is text
            fh.seek(start)
            sites.clear()
            longer = dataclasses.replace(limits, max_line=limits.max_bytes)
            results, trailing = self._run_vm(fh, size, where, base, longer, sites, max_pickles)
        # text that happens to start with an opcode stops at an invalid one: not a pickle after all.
        # A long run of valid opcodes that only a resource limit stopped is a pickle (pickle.load
        # has no MARK or opcode limit and would go on to the payload behind them): report it.
        if not where and not base and results and self.first_pickle is None:
            self.first_pickle = results[0]
        limited = any(a.rule == "pickle/limit-exceeded" and r.opcodes >= QUIET_LIMIT_MIN_OPCODES
                      for r in results for a in r.anomalies)
        if quiet and not limited and not any(importable(g) for r in results for g in r.globals):
            return []
        self.sites.extend(PickleSite(where, r) for r in results)
        self.sites.extend(sites)
        after = fh.tell() if is_seekable(fh) else None
        scan_embedded(self, results, where, open_blob)
        if after is not None:
            fh.seek(after)  # the embedded scans read fh through slices
        if trailing is not None and not trailing_ok:
            self.observe(trailing.rule, trailing.message, where, trailing.offset, trailing.evidence)
        if len(results) > 1 and max_pickles is None:
            self.observe(
                "pickle/multiple-pickles",
                f"{len(results)} pickles one after another; a loader that reads more "
                "than one runs them all (all were scanned)",
                where,
                results[1].start,
                {"pickles": len(results)},
            )
        return results


_ARG_GRAMMAR = {   # what a line argument of a text opcode may start like (first 64 bytes)
    "STRING": re.compile(r"""['"].*""", re.S),
    "UNICODE": re.compile(r".*", re.S),           # raw-unicode-escape: any text
    "PERSID": re.compile(r".*", re.S),
    "GLOBAL module": re.compile(r"[\w.]*"), "GLOBAL name": re.compile(r"[\w.]*"),
    "INST module": re.compile(r"[\w.]*"), "INST name": re.compile(r"[\w.]*"),
}
_NUMBER = re.compile(r"[-+0-9.eEL ]*")


def _overlong_argument(anomaly: Anomaly) -> bool:
    """A line limit hit on a line that is a well-formed start of its opcode's argument (a 70 KiB
    STRING in front of a payload), not a binary header read as one PUT line."""
    head, what = anomaly.evidence.get("line_head"), str(anomaly.evidence.get("what", ""))
    if anomaly.rule != "pickle/limit-exceeded" or head is None:
        return False
    return bool(_ARG_GRAMMAR.get(what, _NUMBER).fullmatch(head))
