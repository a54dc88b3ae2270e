"""numpy .npy (and the members of .npz, which is a zip): an object array's elements are a pickle."""

from __future__ import annotations

import ast
import re
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


# numpy.lib.format.descr_to_dtype hands a string to numpy.dtype, which reads "O", "O8", "object",
# "object_" and comma lists or subarrays of them ("f4,O", "(2,)O") as objects: any word of the
# string that starts with o/O (no other type code or name does)
_OBJECT_WORD = re.compile(r"(?:^|[^A-Za-z])[Oo]")


def _descr_has_object(descr: Any) -> bool:
    """A .npy descr as descr_to_dtype reads it: a type string ("|O", "<f4"), a (type, shape)
    subarray, or fields [(name, type[, shape]), ...] whose types are any of these."""
    if isinstance(descr, str):
        return _OBJECT_WORD.search(descr) is not None
    if isinstance(descr, tuple):
        return len(descr) >= 1 and _descr_has_object(descr[0])
    if isinstance(descr, list):
        return any(isinstance(f, (tuple, list)) and len(f) >= 2 and _descr_has_object(f[1]) for f in descr)
    return False
