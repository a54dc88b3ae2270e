"""A small pickle assembler: tests write payloads as opcodes by name, not as byte literals.

    from testing.pickle_asm import asm, frame, o
    data = asm(o.PROTO(4), frame(o.SHORT_BINUNICODE("builtins"), o.SHORT_BINUNICODE("len"),
                                 o.STACK_GLOBAL(), o.SHORT_BINUNICODE("abc"), o.TUPLE1(), o.REDUCE(),
                                 o.STOP()))

`o.NAME(arg)` is any opcode of `pickletools.opcodes` (protocols 0-5), its argument encoded as
pickletools documents it; `length=` overrides the declared length of a sized argument (a lie).
`asm` joins opcodes, raw bytes (for deliberate garbage) and nested lists. `frame(...)` prefixes
its content with a FRAME of its true length, or `length=` whatever a test wants to claim.
Nothing here imports or calls anything named in a payload.
"""

from __future__ import annotations

import pickle
import pickletools
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_BY_NAME = {op.name: op for op in pickletools.opcodes}

# argument kind (pickletools ArgumentDescriptor name) -> struct format of the fixed-size ones
_FIXED = {"uint1": "<B", "uint2": "<H", "uint4": "<I", "int4": "<i", "uint8": "<Q", "float8": ">d"}
# sized arguments: kind -> (struct format of the length, text codec or None for bytes)
_SIZED = {
    "string1": ("<B", "latin-1"),
    "string4": ("<i", "latin-1"),
    "bytes1": ("<B", None),
    "bytes4": ("<I", None),
    "bytes8": ("<Q", None),
    "bytearray8": ("<Q", None),
    "unicodestring1": ("<B", "utf-8"),
    "unicodestring4": ("<I", "utf-8"),
    "unicodestring8": ("<Q", "utf-8"),
}


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple[Any, ...] = ()
    length: int | None = None  # declared length of a sized argument, when it should lie

    def encode(self) -> bytes:
        desc = _BY_NAME[self.name]
        code = desc.code.encode("latin-1")
        kind = desc.arg.name if desc.arg is not None else None
        if kind is None:
            return code
        if kind == "stringnl_noescape_pair":  # GLOBAL / INST: module and name lines
            module, name = self.args
            return code + f"{module}\n{name}\n".encode()
        (value,) = self.args
        return code + _encode_arg(kind, value, self.length)


def _encode_arg(kind: str, value: Any, length: int | None) -> bytes:
    if kind in _FIXED:
        return struct.pack(_FIXED[kind], value)
    if kind in _SIZED:
        fmt, codec = _SIZED[kind]
        raw = value if codec is None else value.encode(codec, "surrogatepass")
        return struct.pack(fmt, len(raw) if length is None else length) + raw
    if kind in ("long1", "long4"):
        raw = pickle.encode_long(value)
        n = len(raw) if length is None else length
        return (bytes([n]) if kind == "long1" else struct.pack("<i", n)) + raw
    if kind == "decimalnl_short":  # INT (True/False as 01/00), GET, PUT
        text = ("01" if value else "00") if isinstance(value, bool) else str(value)
        return text.encode() + b"\n"
    if kind == "decimalnl_long":
        return f"{value}L\n".encode()
    if kind == "floatnl":
        return repr(float(value)).encode() + b"\n"
    if kind == "stringnl":  # STRING: a quoted Python literal
        return repr(value).encode("latin-1") + b"\n" if isinstance(value, str) else value + b"\n"
    if kind == "stringnl_noescape":  # PERSID
        return f"{value}\n".encode()
    if kind == "unicodestringnl":
        return value.encode("raw-unicode-escape") + b"\n"
    raise ValueError(f"no encoder for argument kind {kind}")


class _Ops:
    """`o.NAME(*args, length=None)` for every opcode name in pickletools."""

    def __getattr__(self, name: str) -> Any:
        if name not in _BY_NAME:
            raise AttributeError(f"no pickle opcode {name}")

        def make(*args: Any, length: int | None = None) -> Op:
            return Op(name, args, length)

        return make


o = _Ops()


def asm(*parts: Op | bytes | Iterable[Any]) -> bytes:
    out = bytearray()
    for part in parts:
        if isinstance(part, Op):
            out += part.encode()
        elif isinstance(part, bytes | bytearray):
            out += part
        else:
            out += asm(*part)
    return bytes(out)


def frame(*parts: Op | bytes | Iterable[Any], length: int | None = None) -> bytes:
    """FRAME + content; `length` overrides the declared size (too long, too short ...)."""
    body = asm(*parts)
    return asm(o.FRAME(len(body) if length is None else length)) + body


def const(value: Any) -> list[Op]:
    """Opcodes that push a plain value (str, bytes, int, float, bool, None, tuple of those)."""
    if value is None:
        return [o.NONE()]
    if isinstance(value, bool):
        return [o.NEWTRUE() if value else o.NEWFALSE()]
    if isinstance(value, int):
        return [o.BININT1(value)] if 0 <= value < 256 else [o.LONG1(value)]
    if isinstance(value, float):
        return [o.BINFLOAT(value)]
    if isinstance(value, str):
        return [o.SHORT_BINUNICODE(value) if len(value.encode()) < 256 else o.BINUNICODE(value)]
    if isinstance(value, bytes):
        return [o.SHORT_BINBYTES(value) if len(value) < 256 else o.BINBYTES(value)]
    if isinstance(value, tuple):
        return [o.MARK(), *[op for v in value for op in const(v)], o.TUPLE()]
    raise TypeError(f"const() does not encode {type(value).__name__}")


def stack_global(module: str, name: str) -> list[Op]:
    return [*const(module), *const(name), o.STACK_GLOBAL()]


def call(module: str, name: str, *args: Any) -> list[Op]:
    """`module.name(*args)` through STACK_GLOBAL + REDUCE (protocol 4 style)."""
    return [*stack_global(module, name), *const(tuple(args)), o.REDUCE()]


def program(*parts: Op | bytes | Iterable[Any], proto: int = 4) -> bytes:
    """PROTO + parts + STOP."""
    return asm(o.PROTO(proto), *parts, o.STOP())
