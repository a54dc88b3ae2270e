"""static.tensorflow: TensorFlow SavedModel (`saved_model.pb`) and frozen GraphDef (`.pb`) ops.

A SavedModel's graph (and its function library, where TF2 keeps the real work) runs when the model is
served or called: `PyFunc`/`EagerPyFunc` call Python, `ReadFile`/`WriteFile`/`MatchingFiles` reach the
file system with paths the graph computes. The protobuf is read with a minimal wire-format reader
(no tensorflow, no generated classes) along the few fields that lead to op names; everything else,
constant tensors included, is skipped by length without being read. `saved_model.pbtxt` (text
format) is searched for `op: "..."` lines. Ops and severities: signatures/tensorflow.yaml.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hfguard import signatures
from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.formats.protowire import Source, WireError, fields, text
from hfguard.static.problems import TooLarge, lfs_pointer_problem, read_bounded
from hfguard.target import TargetFile

MAX_PBTXT_BYTES = 256 * 1024 * 1024
MAX_NODES = 5_000_000
_PBTXT_OP = re.compile(rb'\bop:\s*"([A-Za-z0-9_>.]+)"')

# message -> {field number: child message}; only the fields that lead to op names
_SCHEMA: dict[str, dict[int, str]] = {
    "SavedModel": {2: "MetaGraphDef"},
    "MetaGraphDef": {2: "GraphDef"},
    "GraphDef": {1: "NodeDef", 2: "FunctionDefLibrary"},
    "FunctionDefLibrary": {1: "FunctionDef"},
    "FunctionDef": {1: "OpDef", 3: "NodeDef"},
}
_STRINGS = {"NodeDef": (1, 2), "OpDef": (1,)}   # name, op / function name


@functools.cache
def op_rules() -> dict[str, dict[str, Any]]:
    return signatures.load("tensorflow")["ops"]


@dataclass
class GraphOps:
    ops: dict[str, list[str]] = field(default_factory=dict)   # op -> node names (first few)
    nodes: int = 0


def graph_ops(buf: bytes | Source, root: str = "SavedModel", budget: Budget | None = None) -> GraphOps:
    """Op names of every node of every graph and library function. Iterative; the schema is a fixed
    few levels deep, so nesting is bounded by it, not by the input."""
    src = buf if isinstance(buf, Source) else Source(buf)
    out = GraphOps()
    stack: list[tuple[str, int, int, str]] = [(root, 0, src.size, "")]
    while stack:
        kind, start, end, where = stack.pop()
        if kind in _STRINGS:
            out.nodes += 1
            if out.nodes > MAX_NODES:
                raise WireError(f"more than {MAX_NODES} nodes")
            if budget is not None and out.nodes % 4096 == 0:
                budget.tick("reading TensorFlow graph nodes")
            strings: dict[int, str] = {}
            for num, _, s, e in fields(src, start, end):
                if num in _STRINGS[kind] and num not in strings:
                    strings[num] = text(src, s, e)
            if kind == "NodeDef" and 2 in strings:
                names = out.ops.setdefault(strings[2], [])
                if len(names) < 8:
                    names.append(f"{where}/{strings.get(1, '?')}")
            continue
        children = _SCHEMA[kind]
        fn_name = where
        if kind == "FunctionDef":   # name the function from its signature for locations
            for num, _, s, e in fields(src, start, end):
                if num == 1:
                    for n2, _, s2, e2 in fields(src, s, e):
                        if n2 == 1:
                            fn_name = f"function {text(src, s2, e2, 200)}"
                            break
                    break
        for num, _, s, e in fields(src, start, end):
            if num in children and children[num] != "OpDef":
                stack.append((children[num], s, e, fn_name if kind == "FunctionDef" else where or "graph"))
    return out


def op_problems(ops: dict[str, list[str]], where: str = "",
                rule: str = "tf/dangerous-op") -> list[Observation]:
    rules = op_rules()
    out: list[Observation] = []
    for op, nodes in sorted(ops.items()):
        base = op[4:] if op.startswith("Flex") else op    # TFLite Flex ops carry the TF op name
        spec = rules.get(base)
        if spec is None:
            continue
        out.append(Observation(rule, Severity.parse(spec["severity"]),
                               f"op {op} {spec['why']}", f"{where}{nodes[0]}" if nodes else where or None,
                               {"op": op, "nodes": nodes}))
    return out


def _pbtxt_ops(data: bytes) -> dict[str, list[str]]:
    ops: dict[str, list[str]] = {}
    for m in _PBTXT_OP.finditer(data):
        ops.setdefault(m.group(1).decode(), []).append(f"offset {m.start()}")
    return ops


class TensorFlowCheck(Check):
    id = "static.tensorflow"
    tier = "static"
    version = "1"
    description = "TensorFlow SavedModel / GraphDef ops that run Python or touch files (PyFunc, ReadFile ...)"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return file.name.lower().endswith((".pb", ".pbtxt"))

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        name = file.name.lower()
        saved_model = name.startswith("saved_model.")
        if (pointer := lfs_pointer_problem(file, "tf")) is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        if name.endswith(".pbtxt"):
            try:
                problems = op_problems(_pbtxt_ops(read_bounded(file, MAX_PBTXT_BYTES)))
            except TooLarge as exc:
                problems = [Observation("tf/malformed", Severity.MEDIUM, f"graph not analysed: {exc}")]
        else:
            try:
                with file.open() as fh:
                    src = Source(fh, file.size)
                    problems = op_problems(graph_ops(src, "SavedModel" if saved_model else "GraphDef",
                                                     ctx.budget()).ops)
            except WireError as exc:
                # any protobuf may be called .pb; only a SavedModel is ours to call broken
                problems = []
                if saved_model:
                    problems.append(Observation("tf/malformed", Severity.MEDIUM,
                                                f"saved_model.pb is not a readable protobuf: {exc}"))
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Do not load or serve this model; inspect the graph's ops "
                                                  "with saved_model_cli in a sandbox.")
