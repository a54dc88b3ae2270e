"""numpy .npy (and the members of .npz, which is a zip): an object array's elements are a pickle."""

from __future__ import annotations

import ast
import struct
from typing import IO, Any

from hfguard.static.pickle.containers.common import Scanner
from hfguard.static.pickle.vm import Reader, VMStop


def scan_npy(sc: Scanner, fh: IO[bytes], size: int | None, where: str, base: int) -> None:
    reader = Reader(fh, base=base, size=size, budget=sc.budget)
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
        sc.observe(rule, f".npy header: {exc}", where, reader.offset)
        return
    header = _literal_dict(text)
    if header is None or not {"descr", "fortran_order", "shape"} <= set(header):
        sc.observe(
            "numpy/malformed-header",
            ".npy header is not the expected dict literal",
            where,
            base + 8,
            {"header": text[:200]},
        )
        return
    if _descr_has_object(header["descr"]):
        sc.observe(
            "numpy/object-array",
            "object array: its elements are a pickle (numpy.load needs allow_pickle=True)",
            where,
            reader.offset,
            {"descr": str(header["descr"])[:200]},
        )
        sc.scan_pickles(fh, None if size is None else size - reader.pos, where, reader.offset)


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
