"""PaddlePaddle programs without paddle: a ProgramDesc (paddle/fluid/framework/framework.proto) written
field by field — ProgramDesc.blocks = 1; BlockDesc idx = 1, parent_idx = 2, vars = 3, ops = 4;
OpDesc inputs = 1, outputs = 2, type = 3; OpDesc.Var parameter = 1, arguments = 2; VarDesc name = 1."""

from __future__ import annotations


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value & (1 << 64) - 1)


def op(op_type: str, x: str = "x", out: str = "out") -> bytes:
    var_in = _len(1, b"X") + _len(2, x.encode())
    var_out = _len(1, b"Out") + _len(2, out.encode())
    return _len(1, var_in) + _len(2, var_out) + _len(3, op_type.encode())


def program(blocks: list[list[str]]) -> bytes:
    body = b""
    for idx, ops in enumerate(blocks):
        block = _int(1, idx) + _int(2, idx - 1 if idx else -1) + _len(3, _len(1, b"x"))
        block += b"".join(_len(4, op(t)) for t in ops)
        body += _len(1, block)
    return body
