"""static.paddle: PaddlePaddle inference programs (`.pdmodel`, legacy `__model__`).

A `.pdmodel` is a ProgramDesc protobuf: blocks (field 1) of ops (BlockDesc field 4), each op's type
in OpDesc field 3 (paddle/fluid/framework/framework.proto). `py_func` calls Python registered in the
loading process; save/load ops name files. Read with the bounded wire reader (protowire.py); ops
and severities in signatures/paddle.yaml. The `.pdparams` / `.pdopt` files beside it are pickles,
judged by static.serialization.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from hfguard import signatures
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.formats.protowire import Source, WireError, fields, text
from hfguard.static.problems import lfs_pointer_problem
from hfguard.target import TargetFile

MAX_OPS = 5_000_000


@functools.cache
def _ops_rules() -> dict[str, dict[str, Any]]:
    return signatures.load("paddle")["ops"]


def program_ops(buf: bytes | Source) -> dict[str, list[str]]:
    """op type -> locations ('block B op I'), every block of the program."""
    src = buf if isinstance(buf, Source) else Source(buf)
    ops: dict[str, list[str]] = {}
    count = 0
    blocks = [(bs, be) for num, _, bs, be in fields(src, 0, src.size) if num == 1]
    for b, (bs, be) in enumerate(blocks):
        i = 0
        for onum, _, os_, oe in fields(src, bs, be):
            if onum != 4:
                continue
            count += 1
            if count > MAX_OPS:
                raise WireError(f"more than {MAX_OPS} ops")
            for tnum, _, ts, te in fields(src, os_, oe):
                if tnum == 3:
                    where = ops.setdefault(text(src, ts, te, 200), [])
                    if len(where) < 8:
                        where.append(f"block {b} op {i}")
                    break
            i += 1
    return ops


class PaddleCheck(Check):
    id = "static.paddle"
    tier = "static"
    version = "1"
    description = "PaddlePaddle .pdmodel programs: py_func and file ops"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return file.name.lower().endswith(".pdmodel") or file.name == "__model__"

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        if (pointer := lfs_pointer_problem(file, "paddle")) is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        problems: list[Observation] = []
        try:
            with file.open() as fh:
                ops = program_ops(Source(fh, file.size))
            if not ops:
                problems.append(Observation("paddle/malformed", Severity.MEDIUM, "program without any op"))
        except WireError as exc:
            ops = {}
            problems.append(Observation("paddle/malformed", Severity.MEDIUM,
                                        f"not a readable Paddle program: {exc}"))
        rules = _ops_rules()
        for op, where in sorted(ops.items()):
            if op in rules:
                problems.append(Observation("paddle/dangerous-op", Severity.parse(rules[op]["severity"]),
                                            f"op {op} {rules[op]['why']}", where[0],
                                            {"op": op, "ops": where}))
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Do not load this program with paddle.jit.load / "
                                                  "paddle.inference; review its ops first.")
