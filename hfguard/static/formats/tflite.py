"""static.tflite: TensorFlow Lite models (flatbuffer, file identifier `TFL3`): custom and Flex ops.

A TFLite model's operator codes name builtin ops, custom ops (native code the application must
register: the model cannot run without it, and a hostile one is a foothold) and Flex ops (`Flex` +
a TensorFlow op name, run by the Flex delegate with TensorFlow's kernels: FlexReadFile reads files).
Only the Model table and its `operator_codes` vector are read (a few small random reads); tensor
buffers are never touched. Layout after tensorflow/compiler/mlir/lite/schema/schema.fbs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

from hfguard import sniff as fmts
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.formats.tensorflow import op_problems
from hfguard.static.problems import lfs_pointer_problem
from hfguard.target import TargetFile

MAX_OPERATOR_CODES = 100_000
CUSTOM = 32                       # BuiltinOperator.CUSTOM
MODEL_OPERATOR_CODES = 1          # Model table field index
OPCODE_CUSTOM_CODE, OPCODE_BUILTIN = 1, 3


class FlatError(ValueError):
    pass


class FlatReader:
    """Bounded random reads of flatbuffer scalars, tables, vectors and strings."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh, self.size = fh, size

    def read(self, pos: int, n: int) -> bytes:
        if pos < 0 or pos + n > self.size:
            raise FlatError(f"{n} bytes at offset {pos} lie outside the file")
        self.fh.seek(pos)
        data = self.fh.read(n)
        if len(data) != n:
            raise FlatError(f"short read at offset {pos}")
        return data

    def u32(self, pos: int) -> int:
        return struct.unpack("<I", self.read(pos, 4))[0]

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of a table's field, or None when absent."""
        vtable = table - struct.unpack("<i", self.read(table, 4))[0]
        vsize = struct.unpack("<H", self.read(vtable, 2))[0]
        slot = 4 + 2 * index
        if slot + 2 > vsize:
            return None
        off = struct.unpack("<H", self.read(vtable + slot, 2))[0]
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def string(self, pos: int, limit: int = 256) -> str:
        start = self.deref(pos)
        n = self.u32(start)
        return self.read(start + 4, min(n, limit)).decode("utf-8", "replace")


def operator_codes(fh: BinaryIO, size: int) -> list[tuple[int, str | None]]:
    """(builtin code, custom code) of every operator code of the model."""
    f = FlatReader(fh, size)
    model = f.u32(0)
    pos = f.field(model, MODEL_OPERATOR_CODES)
    if pos is None:
        return []
    vec = f.deref(pos)
    n = f.u32(vec)
    if n > MAX_OPERATOR_CODES or vec + 4 + 4 * n > size:
        raise FlatError(f"{n} operator codes cannot fit in the file")
    out = []
    for i in range(n):
        table = f.deref(vec + 4 + 4 * i)
        bpos = f.field(table, OPCODE_BUILTIN)
        builtin = struct.unpack("<i", f.read(bpos, 4))[0] if bpos is not None else 0
        dpos = f.field(table, 0)   # deprecated_builtin_code (int8), what old writers fill in
        if bpos is None and dpos is not None:
            builtin = struct.unpack("<b", f.read(dpos, 1))[0]
        cpos = f.field(table, OPCODE_CUSTOM_CODE)
        out.append((builtin, f.string(cpos) if cpos is not None else None))
    return out


class TFLiteCheck(Check):
    id = "static.tflite"
    tier = "static"
    version = "1"
    description = "TensorFlow Lite models: custom ops and Flex (TensorFlow) ops"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return fmt == fmts.TFLITE or file.name.lower().endswith(".tflite")

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        if (pointer := lfs_pointer_problem(file, "tflite")) is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        problems: list[Observation] = []
        try:
            with file.open() as fh:
                if fmt != fmts.TFLITE:
                    raise FlatError(f"named .tflite but the content is {fmt}")
                codes = operator_codes(fh, file.size)
        except (FlatError, struct.error) as exc:
            codes = []
            problems.append(Observation("tflite/malformed", Severity.MEDIUM,
                                        f"not a readable TFLite model: {exc}"))
        flex: dict[str, list[str]] = {}
        for i, (builtin, custom) in enumerate(codes):
            if builtin != CUSTOM or custom is None:
                continue
            if custom.startswith("Flex"):
                flex.setdefault(custom, []).append(f"operator_codes[{i}]")
            else:
                problems.append(Observation("tflite/custom-op", Severity.MEDIUM,
                                            f"custom op {custom!r}: native code the application must "
                                            "register",
                                            f"operator_codes[{i}]", {"op": custom}))
        problems += op_problems(flex, rule="tflite/flex-op")
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Run this model only with the op resolver you ship; review "
                                                  "custom and Flex ops first.")
