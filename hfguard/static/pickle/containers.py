"""Unpack every pickle-bearing container into pickle streams for the symbolic VM.

Raw pickles (all stacked pickles), PyTorch zip (every member that is a pickle by content, plus the
zip's own consistency: duplicate names, local/central disagreement, CRC, flag bits, bounds),
PyTorch legacy (five stacked pickles, then raw storages whose layout is checked), tar (torch's old
tar checkpoints and generic tar), numpy .npy / .npz (object arrays carry a pickle), joblib (plain or
compressed; its raw arrays interleaved with the pickle are skipped), gzip/bz2/xz/lzma/zlib wrappers,
and archives nested in archives up to a depth bound.

Only what is needed is read: a zip's central directory, local headers and the heads of members;
tensor data members are never read. Nothing is executed or unpickled.
"""

from __future__ import annotations

import ast
import io
import lzma
import re
import struct
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from hfguard import sniff as sn
from hfguard.budget import Budget
from hfguard.findings import Observation
from hfguard.static.pickle.streams import CrcTap, buffered, open_decompressed, open_slice, spool
from hfguard.static.pickle.vm import (
    Call,
    Global,
    Limits,
    PickleResult,
    PickleVM,
    Reader,
    SymDict,
    VMStop,
    scan_stream,
)
from hfguard.static.pickle.zipdir import ZipEntry, ZipError, read_zip_directory

STREAM_ERRORS = (VMStop, OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, struct.error)
COMPRESSED = {sn.GZIP: "gzip", sn.BZIP2: "bzip2", sn.XZ: "xz", sn.LZMA: "lzma", sn.ZLIB: "zlib"}
SCANNED_FORMATS = {sn.PICKLE, sn.TORCH_LEGACY, sn.ZIP, sn.TAR, sn.NUMPY, *COMPRESSED}
_PICKLE_FIRST = set(b"(}]acdefghijlpqrstuvwxyzIJKLMNPQRSTUVX\x80\x8a\x8b\x8c\x8d\x8e\x8f\x93\x94\x95GFBC.0")
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # LONG1 0x1950a86a20f9469cfc6c
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_UNSCANNABLE = {
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!\x1a\x07": "rar",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\x04\x22\x4d\x18": "lz4",
}
# deserialisers called with a bytes literal: the bytes are a second payload, scanned as a file
_EMBEDDED_LOADERS = {
    "pickle.loads",
    "_pickle.loads",
    "dill.loads",
    "cloudpickle.loads",
    "torch.storage._load_from_bytes",
    "joblib.numpy_pickle.loads",
    "numpy.loads",
}
_JOBLIB_ZF = re.compile(rb"ZF0x[0-9a-fA-F]{1,17} *")
_JOBLIB_WRAPPERS = {
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
}
# element sizes of legacy storage classes (torch.FloatStorage ...), for the legacy raw section
_STORAGE_ELEMENT = {
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


@dataclass
class PickleSite:
    where: str  # "" for the file itself, else the member chain ("a.zip!archive/data.pkl")
    result: PickleResult


@dataclass(frozen=True)
class ScanConfig:
    limits: Limits = Limits()
    quiet_limits: Limits = Limits(max_opcodes=200_000, max_bytes=64 << 20)
    max_depth: int = 4
    max_members: int = 100_000
    max_central_directory: int = 64 << 20
    max_decompressed: int = 4 << 30
    max_ratio: float = 200.0
    ratio_floor: int = 128 << 20  # the ratio bound applies past this many output bytes
    max_pickles: int = 64


def looks_like_pickle(head: bytes) -> bool:
    """PROTO 2-5: a pickle for certain (or a broken one, which is a finding)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def may_be_pickle(head: bytes) -> bool:
    """Could be a protocol 0/1 pickle: tried quietly, reported only if it parses with globals."""
    return bool(head) and head[0] in _PICKLE_FIRST


class ContainerScanner:
    def __init__(self, config: ScanConfig | None = None, budget: Budget | None = None) -> None:
        self.config = config or ScanConfig()
        self.budget = budget or Budget(seconds=1e9)
        # structural evidence; no severity: signatures/pickle_globals.yaml rates each rule id
        self.observations: list[Observation] = []
        self._last_fh: Any = None
        self._depth = 0
        self.sites: list[PickleSite] = []

    def _observe(
        self,
        rule: str,
        message: str,
        where: str,
        offset: int | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        location = member_location(where, offset)
        self.observations.append(Observation(rule, None, message, location, evidence or {}))

    # -- entry -------------------------------------------------------------------------------------
    def scan(
        self, fh: BinaryIO, size: int | None, fmt: str, where: str = "", depth: int = 0, base: int = 0
    ) -> None:
        """Scan a stream sniffed as `fmt`. `base` is the stream's absolute offset (for locations)."""
        if depth > self.config.max_depth:
            self._observe(
                "archive/depth-exceeded",
                f"archives nested deeper than {self.config.max_depth}",
                where,
                evidence={"limit": self.config.max_depth},
            )
            return
        self.budget.tick("scanning containers")
        outer, self._depth = self._depth, depth
        try:
            self._dispatch(fh, size, fmt, where, depth, base)
        finally:
            self._depth = outer

    def _dispatch(self, fh: BinaryIO, size: int | None, fmt: str, where: str, depth: int, base: int) -> None:
        if fmt not in (sn.ZIP, sn.TAR, sn.NUMPY, sn.TORCH_LEGACY) and fmt not in COMPRESSED:
            head = _peek(fh, 8)
            for magic, kind in _UNSCANNABLE.items():
                if head.startswith(magic):
                    msg = f"{kind} archive: hfguard cannot open it, so whatever it holds is unscanned"
                    self._observe("archive/unscannable", msg, where, base, {"format": kind})
                    return
        if fmt in (sn.TAR, sn.SAFETENSORS) and may_be_pickle(_peek(fh, 1)) and _seekable(fh):
            # a polyglot: a tar whose first member name, or a "safetensors" header length, is also
            # a pickle that pickle.load would run
            self.scan_pickles(fh, size, where, base, quiet=True)
            fh.seek(0)
        if fmt == sn.ZIP:
            self.scan_zip(fh, size, where, depth)
        elif fmt == sn.TORCH_LEGACY:
            self.scan_legacy(fh, size, where, base)
        elif fmt == sn.TAR:
            self.scan_tar(fh, where, depth)
        elif fmt == sn.NUMPY:
            self.scan_npy(fh, size, where, base)
        elif fmt in COMPRESSED:
            self.scan_compressed(fh, size, COMPRESSED[fmt], where, depth)
        elif fmt == sn.PICKLE:
            head = _peek(fh, 32)
            if head[:1] == b"\x80" and 2 <= head.find(_LEGACY_MAGIC) <= 11:  # legacy torch, any protocol
                self.scan_legacy(fh, size, where, base)
            else:
                self.scan_pickles(fh, size, where, base, quiet=not looks_like_pickle(head))
        elif fmt == sn.SAFETENSORS:
            return  # tried above as a polyglot; the header itself has its own check
        elif _JOBLIB_ZF.match(_peek(fh, 22)):
            # joblib's old "ZF" format: b"ZF" + hex length padded to 19 (+ a space in joblib <= 0.8.4),
            # then a zlib stream of a pickle; joblib.load still reads it
            head = _peek(fh, 22)
            skip = 22 if head[21:22] == b" " else 21
            fh.read(skip)
            self.scan_compressed(fh, None if size is None else size - skip, "zlib", where, depth)
        else:  # text / unknown whose first byte is an opcode: a protocol 0 pickle in disguise?
            self.scan_pickles(fh, size, where, base, quiet=True)

    # -- pickles -----------------------------------------------------------------------------------
    def scan_pickles(
        self,
        fh: BinaryIO,
        size: int | None,
        where: str,
        base: int = 0,
        *,
        quiet: bool = False,
        max_pickles: int | None = None,
        trailing_ok: bool = False,
    ) -> list[PickleResult]:
        limits = self.config.quiet_limits if quiet else self.config.limits
        reader = Reader(fh, base=base, size=size, budget=self.budget)
        sites: list[PickleSite] = []
        vm = PickleVM(limits, self.budget, build_hook=self._joblib_hook(where, sites, limits))
        results, trailing = scan_stream(reader, vm, max_pickles or self.config.max_pickles)
        self._last_fh = reader.fh  # a non-seekable peek may have wrapped it
        if quiet and not any(_importable(g) for r in results for g in r.globals):
            return []  # not a pickle after all (text that happens to start with an opcode)
        self.sites.extend(PickleSite(where, r) for r in results)
        self.sites.extend(sites)
        self._scan_embedded(results, where)
        if trailing is not None and not trailing_ok:
            self._observe(trailing.rule, trailing.message, where, trailing.offset, trailing.evidence)
        if len(results) > 1 and max_pickles is None:
            self._observe(
                "pickle/multiple-pickles",
                f"{len(results)} pickles one after another; a loader that reads more "
                "than one runs them all (all were scanned)",
                where,
                results[1].start,
                {"pickles": len(results)},
            )
        return results

    def _scan_embedded(self, results: list[PickleResult], where: str) -> None:
        for r in results:
            for call in r.calls:
                if not (isinstance(call.func, Global) and call.func.qualname in _EMBEDDED_LOADERS):
                    continue
                args = call.args if isinstance(call.args, tuple) else ()
                if args and isinstance(args[0], bytes):
                    data = args[0]
                    inner = _join(where, f"<embedded@{call.offset}>")
                    self.scan(io.BytesIO(data), len(data), sn.sniff(data[:600]), inner, self._depth + 1)  # type: ignore[arg-type]

    def _as_plain_pickle(self, reader: Reader, length: int, where: str, sites: list[PickleSite]) -> None:
        """joblib skips an array's bytes; plain pickle.load of the same file would decode them as
        opcodes. A payload planted there is reported (quietly: numeric data never parses so)."""
        start = reader.fh.tell()
        window = Reader(open_slice(reader.fh, start, length), base=reader.offset, size=length)
        res = PickleVM(self.config.quiet_limits, self.budget).run_one(window)
        reader.fh.seek(start)
        if any(_importable(g) for g in res.globals):
            sites.append(
                PickleSite(_join(where, f"<array bytes as pickle.load reads them @{res.start}>"), res)
            )

    def _joblib_hook(self, where: str, sites: list[PickleSite], limits: Limits):
        """After BUILD of joblib's NumpyArrayWrapper the array's bytes follow in the stream: skip
        them (or scan the nested pickle of an object array), as joblib's unpickler reads them."""

        def hook(call: Call, reader: Reader) -> None:
            func = call.func
            if not (isinstance(func, Global) and func.qualname in _JOBLIB_WRAPPERS):
                return None
            state = call.state
            if not isinstance(state, SymDict):
                raise VMStop("pickle/malformed", "joblib array wrapper without a state dict")
            itemsize, has_object = _dtype_size(state.get("dtype"))
            if has_object:
                nested = PickleVM(limits, self.budget).run_one(reader)
                sites.append(PickleSite(f"{where}{'!' if where else ''}object-array@{nested.start}", nested))
                if not nested.complete:
                    raise VMStop("pickle/truncated", "joblib object array pickle is incomplete")
                return None
            shape = state.get("shape")
            if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
                raise VMStop("pickle/malformed", "joblib array wrapper with a bad shape")
            if itemsize is None:
                raise VMStop(
                    "pickle/malformed",
                    "joblib array wrapper with a dtype hfguard cannot size",
                    dtype=repr(state.get("dtype")),
                )
            count = 1
            for d in shape:
                count *= d
            if state.get("numpy_array_alignment_bytes") is not None:
                (pad,) = reader.read(1, "joblib alignment padding length")
                reader.skip(pad, "joblib alignment padding")
            elif count and _seekable(reader.fh) and reader.size is not None:
                self._as_plain_pickle(reader, min(count * itemsize, 1 << 20), where, sites)
            reader.skip(count * itemsize, "joblib array data")
            return None

        return hook

    # -- zip ---------------------------------------------------------------------------------------
    def scan_zip(self, fh: BinaryIO, size: int | None, where: str, depth: int) -> None:
        if size is None:
            size = fh.seek(0, 2)
        try:
            entries = read_zip_directory(
                fh,
                size,
                max_members=self.config.max_members,
                max_central_directory=self.config.max_central_directory,
                budget=self.budget,
            )
        except ZipError as exc:
            self._observe(exc.rule, str(exc), where, exc.offset, exc.evidence)
            return
        names = Counter(e.raw_name for e in entries)
        for raw, n in names.items():
            if n > 1:
                self._observe(
                    "zip/duplicate-member",
                    f"{n} central-directory entries named {raw.decode('utf-8', 'replace')!r}; "
                    "loaders disagree on which one they read (all were scanned)",
                    _join(where, raw.decode("utf-8", "replace")),
                    evidence={"count": n},
                )
        storage_keys: set[str] = set()
        # the pickles first (they name the storages), then everything else
        ordered = sorted(entries, key=lambda e: (not e.name.endswith(".pkl"), e.index))
        for e in ordered:
            self.budget.tick("scanning zip members")
            member_where = _join(where, e.name)
            for rule, msg, ev in e.problems:
                self._observe(rule, msg, member_where, e.header_offset, ev)
            if e.data_offset is None or e.usize == 0:
                continue
            self._scan_member(fh, e, member_where, depth, storage_keys)

    def _scan_member(self, fh: BinaryIO, e: ZipEntry, where: str, depth: int, storage_keys: set[str]) -> None:
        cfg = self.config
        kind = {0: None, 8: "deflate", 12: "bzip2", 14: "lzma-zip"}.get(e.method, "?")
        if kind == "?":
            self._observe(
                "archive/unsupported-compression",
                f"compression method {e.method} cannot be decoded; member unscanned",
                where,
                e.header_offset,
                {"method": e.method},
            )
            return
        assert e.data_offset is not None

        def open_member() -> tuple[IO[bytes], CrcTap | None]:
            raw = open_slice(fh, e.data_offset, e.csize)
            if kind is None:
                return raw, None
            tap = CrcTap(
                open_decompressed(
                    kind,
                    raw,
                    e.csize,
                    cap=cfg.max_decompressed,
                    ratio=cfg.max_ratio,
                    ratio_floor=cfg.ratio_floor,
                    budget=self.budget,
                )
            )
            return buffered(tap), tap

        is_storage = _storage_key(e.name) in storage_keys
        if is_storage:
            return  # tensor bytes a pickle names as a storage: torch reads them as data, never unpickles
        try:
            stream, tap = open_member()
            head = stream.read(600)
        except STREAM_ERRORS as exc:
            self._stream_error(exc, where, e.data_offset)
            return
        fmt = sn.sniff(head, e.name, e.usize)
        named_pickle = e.name.endswith(".pkl") and fmt not in SCANNED_FORMATS
        if named_pickle:  # torch unpickles <archive>/data.pkl whatever its first bytes look like
            fmt = sn.PICKLE
        if not _interesting(fmt, head):
            return
        base = e.data_offset if kind is None else 0
        stream, tap = open_member()
        if kind is None:
            tap = CrcTap(stream)
            stream = buffered(tap)
        try:
            if _pickle_member(fmt, head):
                quiet = not (looks_like_pickle(head) or named_pickle)
                results = self.scan_pickles(stream, e.usize, where, base, quiet=quiet)
                for r in results:
                    storage_keys.update(_storage_keys(r.pids))
            elif fmt == sn.ZIP:
                inner = (
                    open_slice(fh, e.data_offset, e.csize)
                    if kind is None
                    else spool(stream, cfg.max_decompressed, self.budget)
                )
                self.scan(inner, None, sn.ZIP, where, depth + 1)  # type: ignore[arg-type]
                return  # a nested stored zip is read by its directory: no full CRC pass
            else:
                self.scan(stream, e.usize, fmt, where, depth + 1, base)  # type: ignore[arg-type]
            tap.drain(self.budget)
            if tap.count == e.usize and e.crc >= 0 and (tap.crc & 0xFFFFFFFF) != e.crc:
                self._observe(
                    "zip/bad-crc",
                    f"CRC-32 {tap.crc:08x} does not match the directory's {e.crc:08x} "
                    "(Python's zipfile refuses this member; torch may load it)",
                    where,
                    e.header_offset,
                    {"crc": f"{tap.crc:08x}", "expected": f"{e.crc:08x}"},
                )
            elif tap.count != e.usize and e.crc >= 0:
                self._observe(
                    "zip/header-mismatch",
                    f"member holds {tap.count} bytes, the directory says {e.usize}",
                    where,
                    e.header_offset,
                    {"actual": tap.count, "declared": e.usize},
                )
        except STREAM_ERRORS as exc:
            self._stream_error(exc, where, e.data_offset)

    def _stream_error(self, exc: BaseException, where: str, offset: int | None) -> None:
        if isinstance(exc, VMStop):
            self._observe(exc.rule, exc.message, where, offset, exc.evidence)
        else:
            self._observe(
                "archive/malformed",
                f"cannot read: {type(exc).__name__}: {exc}",
                where,
                offset,
            )

    # -- compressed streams ------------------------------------------------------------------------
    def scan_compressed(self, fh: BinaryIO, size: int | None, kind: str, where: str, depth: int) -> None:
        cfg = self.config
        inner_where = _join(where, f"<{kind}>")
        try:
            stream = open_decompressed(
                kind,
                fh,
                size,
                cap=cfg.max_decompressed,
                ratio=cfg.max_ratio,
                ratio_floor=cfg.ratio_floor,
                budget=self.budget,
            )
            head = stream.peek(600)[:600]
            fmt = sn.sniff(head, "", None)
            if fmt == sn.ZIP:
                self.scan(
                    spool(stream, cfg.max_decompressed, self.budget),
                    None,  # type: ignore[arg-type]
                    sn.ZIP,
                    inner_where,
                    depth + 1,
                )
            elif _interesting(fmt, head):
                self.scan(stream, None, fmt, inner_where, depth + 1)  # type: ignore[arg-type]
        except STREAM_ERRORS as exc:
            self._stream_error(exc, inner_where, None)

    # -- torch legacy -------------------------------------------------------------------------------
    def scan_legacy(self, fh: BinaryIO, size: int | None, where: str, base: int) -> None:
        """magic, protocol, sys_info, the data pickle, the storage keys; then raw storages."""
        results = self.scan_pickles(fh, size, where, base, max_pickles=5, trailing_ok=True)
        if len(results) < 5 or not all(r.complete for r in results):
            if all(r.complete for r in results):
                self._observe(
                    "torch/legacy-layout",
                    f"legacy torch file with {len(results)} pickles instead of 5",
                    where,
                )
            return
        keys, data = results[4].value, results[3]
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            self._observe(
                "torch/legacy-layout",
                "legacy storage key list is not a list of strings",
                where,
                results[4].start,
            )
            return
        elsize = {}
        for pid in data.pids:
            if (
                isinstance(pid, tuple)
                and len(pid) >= 5
                and pid[0] == "storage"
                and isinstance(pid[1], Global)
            ):
                m = re.fullmatch(r"(\w*?)Storage", pid[1].name)
                elsize[pid[2]] = _STORAGE_ELEMENT.get(m.group(1) if m else "")
        end = results[4].end
        reader = Reader(
            self._last_fh, base=end, size=None if size is None else size - (end - base), budget=self.budget
        )
        try:
            for key in keys:
                (numel,) = struct.unpack("<q", reader.read(8, "storage size"))
                es = elsize.get(key)
                if es is None or numel < 0:
                    raise VMStop(
                        "torch/legacy-layout", f"storage {key!r} has no known element size or a bad size"
                    )
                reader.skip(numel * es, f"storage {key}")
                self.budget.tick("legacy storages")
        except VMStop as exc:
            self._observe(
                "torch/legacy-layout",
                f"raw storage section: {exc.message}",
                where,
                reader.offset,
                exc.evidence,
            )
            return
        if reader.remaining():
            # bytes after the last storage: maybe one more pickle hidden there
            tail = self.scan_pickles(fh, reader.remaining(), where, reader.offset, quiet=True)
            if not tail:
                self._observe(
                    "pickle/trailing-data",
                    f"{reader.remaining()} bytes after the last legacy storage",
                    where,
                    reader.offset,
                    {"bytes": reader.remaining()},
                )

    # -- tar -----------------------------------------------------------------------------------------
    def scan_tar(self, fh: BinaryIO, where: str, depth: int) -> None:
        cfg = self.config
        seekable = _seekable(fh)
        try:
            tf = tarfile.open(fileobj=fh, mode="r:" if seekable else "r|")  # noqa: SIM115
        except (tarfile.TarError, OSError, EOFError) as exc:
            self._observe("archive/malformed", f"cannot read tar: {exc}", where)
            return
        names: list[str] = []
        count = 0
        try:
            while (m := tf.next()) is not None:
                count += 1
                if count > cfg.max_members:
                    self._observe(
                        "archive/too-many-members",
                        f"more than {cfg.max_members} tar members",
                        where,
                        evidence={"limit": cfg.max_members},
                    )
                    return
                self.budget.tick("tar members")
                names.append(m.name)
                if not m.isfile() or m.size == 0:
                    continue
                ef = tf.extractfile(m)
                if ef is None:
                    continue
                mwhere = _join(where, m.name)
                head = ef.read(600)
                fmt = sn.sniff(head, m.name, m.size)
                if not _interesting(fmt, head):
                    continue
                if seekable:
                    ef.seek(0)
                    stream: IO[bytes] = ef
                else:
                    stream = buffered(_Prefixed(head, ef))  # type: ignore[arg-type]
                if m.name in ("storages", "tensors") and looks_like_pickle(head):
                    self.scan_torch_tar_records(stream, m.size, mwhere, m.name)  # type: ignore[arg-type]
                elif fmt == sn.ZIP:
                    inner = stream if seekable else spool(stream, cfg.max_decompressed, self.budget)
                    self.scan(inner, m.size, sn.ZIP, mwhere, depth + 1)  # type: ignore[arg-type]
                elif _pickle_member(fmt, head):
                    self.scan_pickles(
                        stream,
                        m.size,
                        mwhere,
                        m.offset_data,  # type: ignore[arg-type]
                        quiet=not looks_like_pickle(head),
                    )
                else:
                    self.scan(stream, m.size, fmt, mwhere, depth + 1, m.offset_data)  # type: ignore[arg-type]
        except (tarfile.TarError, OSError, EOFError) as exc:
            self._observe("archive/malformed", f"cannot read tar: {exc}", where)
        except VMStop as exc:
            self._stream_error(exc, where, None)

    def scan_torch_tar_records(self, fh: BinaryIO, size: int, where: str, kind: str) -> None:
        """torch's pre-1.0 tar checkpoints: `storages` and `tensors` hold a pickled count, then per
        record a pickle (every one runs under pickle.load) followed by raw bytes of a known layout."""
        reader = Reader(fh, size=size, budget=self.budget)
        vm = PickleVM(self.config.limits, self.budget)
        try:
            first = vm.run_one(reader)
            self.sites.append(PickleSite(where, first))
            count = first.value
            if not first.complete or not isinstance(count, int) or not 0 <= count <= self.config.max_members:
                raise VMStop("torch/legacy-layout", f"{kind}: record count is not a small int")
            for _ in range(count):
                rec = vm.run_one(reader)
                self.sites.append(PickleSite(where, rec))
                value = rec.value
                if not (rec.complete and isinstance(value, tuple) and len(value) == 3):
                    raise VMStop("torch/legacy-layout", f"{kind}: a record is not a 3-tuple pickle")
                if kind == "storages":
                    stype = value[2]
                    m = re.fullmatch(r"(\w*?)Storage", stype.name) if isinstance(stype, Global) else None
                    elsize = _STORAGE_ELEMENT.get(m.group(1)) if m else None
                    (numel,) = struct.unpack("<q", reader.read(8, "storage size"))
                    if elsize is None or numel < 0:
                        raise VMStop("torch/legacy-layout", f"storages: bad storage type or size {numel}")
                    reader.skip(numel * elsize, "storage data")
                else:
                    (ndim,) = struct.unpack("<i", reader.read(4, "tensor ndim"))
                    if not 0 <= ndim <= 64:
                        raise VMStop("torch/legacy-layout", f"tensors: ndim {ndim}")
                    reader.skip(4 + 16 * ndim + 8, "tensor sizes, strides and offset")
        except VMStop as exc:
            self._observe(exc.rule, exc.message, where, reader.offset, exc.evidence)
            return
        if reader.remaining():
            self._observe(
                "pickle/trailing-data",
                f"{reader.remaining()} bytes after the last record",
                where,
                reader.offset,
                {"bytes": reader.remaining()},
            )

    # -- numpy ---------------------------------------------------------------------------------------
    def scan_npy(self, fh: BinaryIO, size: int | None, where: str, base: int) -> None:
        reader = Reader(fh, base=base, size=size, budget=self.budget)
        try:
            magic = reader.read(8, ".npy magic")
            major = magic[6]
            if major == 1:
                (hlen,) = struct.unpack("<H", reader.read(2, ".npy header length"))
            elif major in (2, 3):
                (hlen,) = struct.unpack("<I", reader.read(4, ".npy header length"))
            else:
                raise VMStop("numpy/malformed-header", f".npy version {major} is unknown")
            if hlen > 1 << 20:
                raise VMStop("numpy/malformed-header", f".npy header of {hlen} bytes", length=hlen)
            text = reader.read(hlen, ".npy header").decode("utf-8" if major == 3 else "latin-1")
        except (VMStop, UnicodeDecodeError) as exc:
            rule = exc.rule if isinstance(exc, VMStop) else "numpy/malformed-header"
            self._observe(rule, f".npy header: {exc}", where, reader.offset)
            return
        header = _literal_dict(text)
        if header is None or not {"descr", "fortran_order", "shape"} <= set(header):
            self._observe(
                "numpy/malformed-header",
                ".npy header is not the expected dict literal",
                where,
                base + 8,
                {"header": text[:200]},
            )
            return
        if _descr_has_object(header["descr"]):
            self._observe(
                "numpy/object-array",
                "object array: its elements are a pickle (numpy.load needs allow_pickle=True)",
                where,
                reader.offset,
                {"descr": str(header["descr"])[:200]},
            )
            self.scan_pickles(fh, None if size is None else size - reader.pos, where, reader.offset)


def member_location(where: str, offset: int | None, index: int | None = None) -> str:
    """Where in a container: the member chain, the byte offset, the opcode index."""
    parts = [f"member {where}"] if where else []
    if offset is not None:
        parts.append(f"offset {offset}")
    if index:
        parts.append(f"opcode {index}")
    return ", ".join(parts) or "file"


# -- helpers -------------------------------------------------------------------------------------------
class _Prefixed(io.RawIOBase):
    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(b))
        b[: len(data)] = data
        return len(data)


def _peek(fh: BinaryIO, n: int) -> bytes:
    if hasattr(fh, "peek"):
        return fh.peek(n)[:n]  # type: ignore[attr-defined]
    pos = fh.tell()
    data = fh.read(n)
    fh.seek(pos)
    return data


def _seekable(fh: Any) -> bool:
    try:
        return bool(fh.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _join(where: str, name: str) -> str:
    return f"{where}!{name}" if where else name


def _storage_key(name: str) -> str:
    parts = name.split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "data" else ""


def _storage_keys(pids: list[Any]) -> set[str]:
    return {str(p[2]) for p in pids if isinstance(p, tuple) and len(p) >= 3 and p[0] == "storage"}


def _literal_dict(text: str) -> dict[str, Any] | None:
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _descr_has_object(descr: Any) -> bool:
    """A .npy descr: a type string ("|O", "<f4") or fields [(name, type[, shape]), ...]."""
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        return any(isinstance(f, tuple) and len(f) >= 2 and _descr_has_object(f[1]) for f in descr)
    return False


def _pickle_member(fmt: str, head: bytes) -> bool:
    unscannable = any(head.startswith(m) for m in _UNSCANNABLE)
    return not unscannable and (fmt == sn.PICKLE or (fmt not in SCANNED_FORMATS and may_be_pickle(head)))


def _interesting(fmt: str, head: bytes) -> bool:
    """Worth a look: a container we open, a possible pickle, or an archive we must report."""
    return fmt in SCANNED_FORMATS or may_be_pickle(head) or any(head.startswith(m) for m in _UNSCANNABLE)


def _importable(g: Global) -> bool:
    """Names an import could resolve; a text file misread as GLOBAL yields names that cannot."""
    return bool(_IDENTIFIER.fullmatch(g.module) and _IDENTIFIER.fullmatch(g.name))


def _dtype_size(dtype: Any) -> tuple[int | None, bool]:
    """(itemsize, has_object) of a pickled numpy.dtype: Call(numpy.dtype, ('f8', False, True)) with a
    state tuple (version, byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata])."""
    if not (
        isinstance(dtype, Call)
        and isinstance(dtype.func, Global)
        and dtype.func.name == "dtype"
        and isinstance(dtype.args, tuple)
        and dtype.args
        and isinstance(dtype.args[0], str)
    ):
        return None, False
    code = dtype.args[0]
    state = dtype.state if isinstance(dtype.state, tuple) else ()
    flags = state[7] if len(state) > 7 and isinstance(state[7], int) else 0
    if code.startswith("O") or flags & 0x1:  # NPY_ITEM_REFCOUNT: the dtype holds objects
        return None, True
    if len(state) > 5 and isinstance(state[5], int) and state[5] > 0:
        return state[5], False
    m = re.fullmatch(r"[a-zA-Z?](\d+)", code)
    if m:
        return int(m.group(1)), False
    return None, False
