"""The test assembler writes what the standard library reads: every opcode of protocols 0-5
round-trips through pickletools, and assembled benign programs load to the expected value."""

from __future__ import annotations

import pickle
import pickletools

import pytest

from testing.pickle_asm import asm, call, const, frame, o, program

# one sample argument per opcode that takes one
SAMPLES = {
    "INT": 7, "BININT": -5, "BININT1": 200, "BININT2": 60000, "LONG": 2**70, "LONG1": -(2**40),
    "LONG4": 2**100, "STRING": "it's", "BINSTRING": "abc", "SHORT_BINSTRING": "ab", "BINBYTES": b"xy",
    "SHORT_BINBYTES": b"z", "BINBYTES8": b"q", "BYTEARRAY8": b"ba", "UNICODE": "h\u00e9",
    "SHORT_BINUNICODE": "\u20ac", "BINUNICODE": "uni", "BINUNICODE8": "u8", "FLOAT": 1.5,
    "BINFLOAT": -2.25, "GET": 3, "BINGET": 4, "LONG_BINGET": 70000, "PUT": 3, "BINPUT": 4,
    "LONG_BINPUT": 70000, "EXT1": 9, "EXT2": 300, "EXT4": 70000, "PROTO": 5, "FRAME": 11,
    "PERSID": "pid0",
}


@pytest.mark.parametrize("desc", pickletools.opcodes, ids=lambda d: d.name)
def test_every_opcode_round_trips_through_pickletools(desc):
    if desc.name in ("GLOBAL", "INST"):
        op, expected = getattr(o, desc.name)("collections", "OrderedDict"), "collections OrderedDict"
    elif desc.arg is None:
        op, expected = getattr(o, desc.name)(), None
    else:
        op, expected = getattr(o, desc.name)(SAMPLES[desc.name]), SAMPLES[desc.name]
    got, arg, pos = next(pickletools.genops(asm(op, o.STOP())))
    assert (got.name, pos) == (desc.name, 0)
    if desc.name == "INT":
        assert arg == 7
    elif desc.name == "BYTEARRAY8":
        assert arg == bytearray(expected)
    else:
        assert arg == expected


def test_programs_load_with_the_standard_unpickler():
    data = program(frame(*call("builtins", "len", "abcd")), proto=4)
    assert pickle.loads(data) == 4
    tup = program(*const((1, "a", b"b", None, True, 2.5, 300)), proto=2)
    assert pickle.loads(tup) == (1, "a", b"b", None, True, 2.5, 300)


def test_a_declared_length_can_lie():
    assert asm(o.SHORT_BINUNICODE("abc", length=9)) == b"\x8c\x09abc"
    assert frame(o.NONE(), length=100)[:9] == b"\x95" + (100).to_bytes(8, "little")
