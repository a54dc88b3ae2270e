"""The VM decodes the common opcodes inline on their ordinary path when it reads a seekable stream
(vm.py `_TRY`), and hands anything unusual to the opcode's handler. Over a stream that cannot
seek every opcode goes through the handlers: both readings must give the same result, for whole
pickles, every truncation and corrupted bytes (limits, bad values, odd targets)."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

import pytest

from hfguard.static.pickle.vm import Limits, PickleVM, Reader, SymDict, scan_stream
from testing import pickles as fx
from testing.pickle_asm import asm, o


class _NoSeek(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        data = self.inner.read(len(b))
        b[: len(data)] = data
        return len(data)


def _shape(value, depth: int = 0):  # type: ignore[no-untyped-def]
    """A comparable picture of a decoded value (symbolic objects by kind and content)."""
    if depth > 30:
        return "..."
    if isinstance(value, SymDict):
        return ("dict", [(_shape(k, depth + 1), _shape(v, depth + 1)) for k, v in value.items])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_shape(v, depth + 1) for v in value])
    if isinstance(value, float):
        return ("float", repr(value))   # (nan == nan is false)
    if isinstance(value, str | bytes | int | bool | type(None)):
        return (type(value).__name__, value)
    return repr(value)


def _decode(data: bytes, seekable: bool, limits: Limits | None = None,  # type: ignore[no-untyped-def]
            buffer: int = 8192):
    # seekable: a buffered file as the scanner opens one (a small buffer puts lines and strings
    # across its end); not seekable: every opcode through its handler
    fh = io.BufferedReader(io.BytesIO(data), buffer) if seekable else io.BufferedReader(_NoSeek(data))
    results, trailing = scan_stream(Reader(fh, size=len(data)), PickleVM(limits))
    return [(r.complete, r.end, r.opcodes, r.protocol, _shape(r.value),
             [(g.qualname, g.offset, g.index, sorted(g.uses), g.sources) for g in r.globals],
             [(c.kind, c.index, c.offset) for c in r.calls],
             [(a.rule, a.message, a.offset, a.index) for a in r.anomalies]) for r in results], \
        trailing and (trailing.rule, trailing.offset)


def _samples(tmp: Path) -> list[bytes]:
    obj = {"w": [1.5, -2, 2**40, True, None, "t\u00e9xt", "\ud800", b"raw", ("a",), ("a", "b"),
                 ("a", "b", "c")],
           "nested": {"k": list(range(300)), "s": {"x" * 300: 1}}, "shared": ["same"] * 3}
    out = [pickle.dumps(obj, protocol=p) for p in range(6)]
    out += [fx.evil_pickle(tmp / "pwned", p) for p in (0, 2, 4)]
    out += [fx.memo_stack_global(tmp / "pwned"), fx.inst_payload(tmp / "pwned"),
            fx.obj_payload(tmp / "pwned"), fx.escaped_stack_global(tmp / "pwned"), fx.ext_payload()]
    # memo keys past a small limit, put again, put with nothing above the mark
    out.append(asm(o.PROTO(2), [[o.NONE(), o.LONG_BINPUT(k)] for k in (0, 1, 2, 1, 3, 4)],
                   o.MARK(), o.LONG_BINPUT(7), o.STOP()))
    # decimal lines as int() reads them and as the unpickler does not
    for op in (b"I", b"g", b"p"):
        for line in (b"01", b"00", b" 01", b"1_0", b"+5", b"0x10", b"-0", b"007", b"-1", b" 0", b"9", b"x"):
            out.append(asm(o.PROTO(0), o.NONE(), o.PUT(0), op + line + b"\n", o.STOP()))
    for line in (b"V\\u00e9t\\xe9", b"Vplain", b"V\\ud800", b"V\\u12", b"V\\U0011ffff", b"F1.5", b"Fnan",
                 b"F 2", b"F1_0", b"Fx", b"F"):
        out.append(asm(o.PROTO(0), o.MARK(), line + b"\n", o.NONE(), o.DICT(), o.STOP()))
    for module in (b"Vos\n", b"V\\u006fs\n"):   # how a STACK_GLOBAL string was written is evidence
        out.append(asm(o.PROTO(0), module, b"Vsystem\n", o.STACK_GLOBAL(), o.STOP()))
    out.append(asm(o.PROTO(0), o.MARK(), o.NONE(), o.DICT(), o.STOP()))   # odd items
    out.append(asm(o.PROTO(0), o.NONE(), o.DICT(), o.STOP()))   # no mark
    # setitem/append/tuple onto what they cannot extend, odd items, nothing above the mark
    g = [o.SHORT_BINUNICODE("os"), o.SHORT_BINUNICODE("system"), o.STACK_GLOBAL()]
    for target in ([o.EMPTY_LIST()], [o.EMPTY_TUPLE()], g, [o.EMPTY_DICT()]):
        for body in ([o.NONE(), o.NONE(), o.SETITEM()], [o.MARK(), o.NONE(), o.SETITEMS()],
                     [o.MARK(), o.NONE(), o.NONE(), o.SETITEMS()], [o.NONE(), o.APPEND()],
                     [o.MARK(), o.NONE(), o.TUPLE2()], [o.MARK(), o.SETITEMS()], [o.TUPLE3()]):
            out.append(asm(o.PROTO(4), target, body, o.STOP()))
    return out


@pytest.mark.parametrize("limits", [None, Limits(max_memo=3, keep_str=4, keep_total=40)])
def test_inline_decoding_equals_the_handlers_on_whole_and_cut_pickles(tmp_path, limits):
    for data in _samples(tmp_path):
        assert _decode(data, True, limits) == _decode(data, False, limits)
        assert _decode(data, True, limits, buffer=7) == _decode(data, False, limits)
        for cut in range(1, len(data), max(1, len(data) // 60)):
            assert _decode(data[:cut], True, limits) == _decode(data[:cut], False, limits), cut


def test_inline_decoding_equals_the_handlers_on_corrupted_pickles(tmp_path):
    rng = random.Random(1234)
    for data in _samples(tmp_path):
        for _ in range(40):
            bad = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            assert _decode(bytes(bad), True) == _decode(bytes(bad), False)
