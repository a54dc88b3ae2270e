"""static.executorch: ExecuTorch programs (`.pte`, flatbuffer identifier `ET12`): operators and delegates.

A program's execution plans list the operators their kernels call (`namespace::name`) and the backend
delegates that receive opaque blobs. Operators outside the stock namespaces need native kernels the
application registers (custom code the model depends on); delegates outside the known backends hand
data to a backend nobody reviewed. Only the Program / ExecutionPlan / Operator / BackendDelegate
tables are read (bounded random reads, never the constant segments). Layout after
executorch/schema/program.fbs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from hfguard import sniff as fmts
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.formats.tflite import FlatError, FlatReader
from hfguard.static.problems import lfs_pointer_problem
from hfguard.target import TargetFile

MAX_ENTRIES = 100_000
PROGRAM_PLANS = 1                                  # Program.execution_plan
PLAN_NAME, PLAN_OPERATORS, PLAN_DELEGATES = 0, 6, 7
STOCK_NAMESPACES = {"aten", "prim", "executorch_prim", "quantized_decomposed", "dim_order_ops", "quantized",
                    "torchao", "llama", "et_vk", "cadence", "cortex_m", "tosa"}
KNOWN_BACKENDS = {"XnnpackBackend", "CoreMLBackend", "MPSBackend", "QnnBackend", "VulkanBackend",
                  "ArmBackend", "EthosUBackend", "NeuronBackend", "OpenvinoBackend", "CadenceBackend",
                  "SamsungBackend", "VgfBackend", "NXPBackend"}


def _vector(f: FlatReader, table: int, index: int) -> list[int]:
    pos = f.field(table, index)
    if pos is None:
        return []
    vec = f.deref(pos)
    n = f.u32(vec)
    if n > MAX_ENTRIES or vec + 4 + 4 * n > f.size:
        raise FlatError(f"vector of {n} entries cannot fit in the file")
    return [f.deref(vec + 4 + 4 * i) for i in range(n)]


def program_ops(fh: BinaryIO, size: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """({operator: [plan names]}, {delegate id: [plan names]}) of every execution plan."""
    f = FlatReader(fh, size)
    program = f.u32(0)
    ops: dict[str, list[str]] = {}
    delegates: dict[str, list[str]] = {}
    for plan in _vector(f, program, PROGRAM_PLANS):
        npos = f.field(plan, PLAN_NAME)
        name = f.string(npos) if npos is not None else "?"
        for op in _vector(f, plan, PLAN_OPERATORS):
            pos = f.field(op, 0)
            ops.setdefault(f.string(pos) if pos is not None else "", []).append(name)
        for d in _vector(f, plan, PLAN_DELEGATES):
            pos = f.field(d, 0)
            delegates.setdefault(f.string(pos) if pos is not None else "", []).append(name)
    return ops, delegates


class ExecuTorchCheck(Check):
    id = "static.executorch"
    tier = "static"
    version = "1"
    description = "ExecuTorch .pte programs: operators outside stock namespaces, unknown backend delegates"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return fmt == fmts.EXECUTORCH or file.name.lower().endswith(".pte")

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        if (pointer := lfs_pointer_problem(file, "executorch")) is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        problems: list[Observation] = []
        try:
            if fmt != fmts.EXECUTORCH:
                raise FlatError(f"named .pte but the content is {fmt}")
            with file.open() as fh:
                ops, delegates = program_ops(fh, file.size)
        except (FlatError, ValueError) as exc:
            ops, delegates = {}, {}
            problems.append(Observation("executorch/malformed", Severity.MEDIUM,
                                        f"not a readable ExecuTorch program: {exc}"))
        for op, plans in sorted(ops.items()):
            if op.split("::")[0] not in STOCK_NAMESPACES:
                problems.append(Observation("executorch/custom-op", Severity.MEDIUM,
                                            f"operator {op!r} is outside the stock namespaces: a native "
                                            "kernel the application must register", f"plan {plans[0]}",
                                            {"op": op}))
        for backend, plans in sorted(delegates.items()):
            if backend not in KNOWN_BACKENDS:
                problems.append(Observation("executorch/unknown-delegate", Severity.LOW,
                                            f"delegate backend {backend!r} is not a known ExecuTorch backend",
                                            f"plan {plans[0]}", {"backend": backend}))
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Run the program only with kernels and backends you ship; "
                                                  "review custom operators first.")
