"""joblib: the arrays interleaved with the pickle (skipped as joblib's unpickler skips them, or read
as the nested pickle of an object array) and joblib's old "ZF" zlib format."""

from __future__ import annotations

import re
from typing import IO, Any

from hfguard.static.pickle.containers.common import PickleSite, Scanner, importable, join
from hfguard.static.pickle.containers.compressed import scan_compressed
from hfguard.static.pickle.peek import is_seekable, peek
from hfguard.static.pickle.streams import open_slice
from hfguard.static.pickle.vm import BuildHook, Call, Global, Limits, PickleVM, Reader, SymDict, VMStop

_JOBLIB_ZF = re.compile(rb"ZF0x[0-9a-fA-F]{1,17} *")
_JOBLIB_WRAPPERS = {
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
}


def is_zf(head: bytes) -> bool:
    return _JOBLIB_ZF.match(head) is not None


def scan_zf(sc: Scanner, fh: IO[bytes], size: int | None, where: str, depth: int) -> None:
    """b"ZF" + hex length padded to 19 (+ a space in joblib <= 0.8.4), then a zlib stream of a
    pickle; joblib.load still reads it."""
    head = peek(fh, 22)
    skip = 22 if head[21:22] == b" " else 21
    fh.read(skip)
    scan_compressed(sc, fh, None if size is None else size - skip, "zlib", where, depth)


def _as_plain_pickle(
    sc: Scanner, reader: Reader, length: int, where: str, sites: list[PickleSite]
) -> None:
    """joblib skips an array's bytes; plain pickle.load of the same file would decode them as
    opcodes. A payload planted there is reported (quietly: numeric data never parses so)."""
    start = reader.fh.tell()
    window = Reader(open_slice(reader.fh, start, length), base=reader.offset, size=length)
    res = PickleVM(sc.config.quiet_limits, sc.budget).run_one(window)
    reader.fh.seek(start)
    if any(importable(g) for g in res.globals):
        sites.append(PickleSite(join(where, f"<array bytes as pickle.load reads them @{res.start}>"), res))


def array_hook(sc: Scanner, where: str, sites: list[PickleSite], limits: Limits) -> BuildHook:
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
            nested = PickleVM(limits, sc.budget).run_one(reader)
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
        elif count and is_seekable(reader.fh) and reader.size is not None:
            _as_plain_pickle(sc, reader, min(count * itemsize, 1 << 20), where, sites)
        reader.skip(count * itemsize, "joblib array data")
        return None

    return hook


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
