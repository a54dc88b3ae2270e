"""static.tensorflow: TensorFlow SavedModel (`saved_model.pb`) and frozen GraphDef (`.pb`) ops.

A SavedModel's graph (and its function library, where TF2 keeps the real work) runs when the model is
served or called: `PyFunc`/`EagerPyFunc` call Python, `ReadFile`/`WriteFile`/`MatchingFiles` reach the
file system with paths the graph computes. The protobuf is read with a minimal wire-format reader
(no tensorflow, no generated classes) along the few fields that lead to op names; everything else,
constant tensors included, is skipped by length without being read. `saved_model.pbtxt` (text
format) is searched for `op: "..."` lines. Ops and severities: signatures/tensorflow.yaml. A `PrintV2`
whose `output_stream` is `file://...` (tf.print to a file) appends to that file: rated as WriteFile.
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
    file_prints: list[tuple[str, str]] = field(default_factory=list)   # (node, file:// stream)


_NODE_ATTR = 5   # NodeDef.attr: map<string, AttrValue>; an entry is {1: key, 2: AttrValue}
_ATTR_S = 2      # AttrValue.s (bytes)


def _file_stream(src: Source, start: int, end: int) -> str | None:
    """The `output_stream` attr of a PrintV2 node when it names a file: tf.print appends there."""
    for num, _, s, e in fields(src, start, end):
        if num != _NODE_ATTR:
            continue
        key, value = None, None
        for n2, _, s2, e2 in fields(src, s, e):
            if n2 == 1:
                key = text(src, s2, e2, 64)
            elif n2 == 2:
                value = next((text(src, s3, e3, 512) for n3, _, s3, e3 in fields(src, s2, e2)
                              if n3 == _ATTR_S), None)
        if key == "output_stream" and value is not None and value.lower().startswith("file://"):
            return value
    return None


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
                node = f"{where}/{strings.get(1, '?')}"
                if len(names) < 8:
                    names.append(node)
                if strings[2] == "PrintV2" and (stream := _file_stream(src, start, end)) is not None:
                    out.file_prints.append((node, stream))
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


def print_problems(file_prints: list[tuple[str, str]]) -> list[Observation]:
    """tf.print(..., output_stream="file://path") appends the printed text to that file when the graph
    runs: a write of graph-chosen content (a command into ~/.bashrc), rated as WriteFile."""
    severity = Severity.parse(op_rules()["WriteFile"]["severity"])
    return [Observation("tf/dangerous-op", severity, f"op PrintV2 appends to {stream!r} when the graph runs",
                        node, {"op": "PrintV2", "output_stream": stream})
            for node, stream in file_prints[:20]]


_PBTXT_FILE_STREAM = re.compile(
    rb'key:\s*"output_stream"\s*value\s*\{\s*s:\s*"(file://[^"]{0,512})"', re.IGNORECASE)


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
                data = read_bounded(file, MAX_PBTXT_BYTES)
                problems = op_problems(_pbtxt_ops(data)) + print_problems(
                    [(f"offset {m.start()}", m.group(1).decode("utf-8", "replace"))
                     for m in _PBTXT_FILE_STREAM.finditer(data)])
            except TooLarge as exc:
                problems = [Observation("tf/malformed", Severity.MEDIUM, f"graph not analysed: {exc}")]
        else:
            try:
                with file.open() as fh:
                    src = Source(fh, file.size)
                    graph = graph_ops(src, "SavedModel" if saved_model else "GraphDef", ctx.budget())
                    problems = op_problems(graph.ops) + print_problems(graph.file_prints)
            except WireError as exc:
                # any protobuf may be called .pb; only a SavedModel is ours to call broken
                problems = []
                if saved_model:
                    problems.append(Observation("tf/malformed", Severity.MEDIUM,
                                                f"saved_model.pb is not a readable protobuf: {exc}"))
        yield from self.findings_from(problems, file=file.path,
                                      remediation="Do not load or serve this model; inspect the graph's ops "
                                                  "with saved_model_cli in a sandbox.")
