"""static.onnx: an ONNX model's external-data references, read from the protobuf wire format.

Tensors may live outside the .onnx file (``data_location = EXTERNAL``, ``external_data`` entries
``location`` / ``offset`` / ``length``). A location that is absolute or climbs out with ``..`` makes
the runtime read any file on the machine into the model (path traversal), so it is a finding; so is
a location that is missing or a range past the end of the file it names. The walk follows only the
messages that can hold tensors (graphs, nodes, attributes, subgraphs, functions) and seeks over
everything else, raw tensor bytes included, with the shared wire reader (protowire.py); it needs
neither onnx nor protobuf.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.formats.protowire import Source, WireError, fields, text, varint
from hfguard.static.problems import lfs_pointer_problem
from hfguard.target import TargetFile

MAX_DEPTH = 64
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
                    "com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental",
                    "com.ms.internal.nhwc", "org.pytorch.aten", "pkg.onnxscript.torch_lib",
                    "pkg.onnxscript.torch_lib.common", "pkg.torch.onnx"}

# message -> {field number: message type it holds}; fields not listed are skipped
SCHEMA: dict[str, dict[int, str]] = {
    "Model": {7: "Graph", 8: "OpsetId", 20: "TrainingInfo", 25: "Function"},
    "TrainingInfo": {1: "Graph", 2: "Graph"},
    "Function": {7: "Node"},
    "Graph": {1: "Node", 5: "Tensor", 15: "SparseTensor"},
    "Node": {5: "Attribute"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph", 22: "SparseTensor",
                  23: "SparseTensor"},
    "SparseTensor": {1: "Tensor", 2: "Tensor"},
    "Tensor": {13: "Entry"},
    "Entry": {},
    "OpsetId": {},
}
# string fields collected: (message, field) -> attribute name
STRINGS = {("Tensor", 8): "name", ("Entry", 1): "key", ("Entry", 2): "value", ("OpsetId", 1): "domain"}


@dataclass
class ExternalRef:
    tensor: str
    location: str
    offset: int = 0
    length: int | None = None


@dataclass
class ONNXInfo:
    external: list[ExternalRef] = field(default_factory=list)
    domains: set[str] = field(default_factory=set)


@dataclass
class _Msg:
    kind: str
    strings: dict[str, str] = field(default_factory=dict)
    varints: dict[int, int] = field(default_factory=dict)
    entries: list[_Msg] = field(default_factory=list)


def _parse(
    src: Source, kind: str, start: int, end: int, depth: int, info: ONNXInfo, budget: Budget | None
) -> _Msg:
    if depth > MAX_DEPTH:
        raise WireError(f"messages nested deeper than {MAX_DEPTH}")
    msg = _Msg(kind)
    children = SCHEMA[kind]
    for number, wire, s, e in fields(src, start, end, varints=True):
        if budget is not None:
            budget.tick("walking an ONNX model")
        if wire == 0:
            msg.varints[number] = varint(src, s, e)
        elif number in children:
            _collect(msg, _parse(src, children[number], s, e, depth + 1, info, budget), info)
        elif (kind, number) in STRINGS and e - s <= 65536:
            msg.strings[STRINGS[(kind, number)]] = text(src, s, e, 65536)
    return msg


def _collect(parent: _Msg, child: _Msg, info: ONNXInfo) -> None:
    if child.kind == "Entry":
        parent.entries.append(child)
    elif child.kind == "OpsetId":
        info.domains.add(child.strings.get("domain", ""))
    elif child.kind == "Tensor" and child.varints.get(14) == 1:  # data_location = EXTERNAL
        kv = {e.strings.get("key", ""): e.strings.get("value", "") for e in child.entries}
        ref = ExternalRef(child.strings.get("name", "?"), kv.get("location", ""))
        try:
            ref.offset = int(kv.get("offset", "0") or 0)
            ref.length = int(kv["length"]) if kv.get("length") else None
        except ValueError:
            ref.offset, ref.length = -1, None
        info.external.append(ref)


def read_onnx(fh: BinaryIO, size: int, budget: Budget | None = None) -> ONNXInfo:
    """External-data references and operator domains of a serialized ModelProto."""
    info = ONNXInfo()
    _parse(Source(fh, size), "Model", 0, size, 0, info, budget)
    return info


def _escapes(location: str) -> bool:
    return (not location or location.startswith(("/", "~")) or "\\" in location or "://" in location
            or "\x00" in location or (len(location) > 1 and location[1] == ":")
            or ".." in location.split("/"))


def external_problems(info: ONNXInfo, onnx_path: str, sizes: dict[str, int]) -> list[Observation]:
    out: list[Observation] = []
    folder = posixpath.dirname(onnx_path)
    for ref in info.external:
        loc = f"tensor {ref.tensor}"
        if _escapes(ref.location):
            out.append(Observation("onnx/external-data-escape", Severity.HIGH,
                                   f"tensor {ref.tensor!r} reads external data from {ref.location!r}, "
                                   "outside the model's folder", loc, {"location": ref.location}))
            continue
        path = posixpath.normpath(posixpath.join(folder, ref.location)) if folder else ref.location
        if path not in sizes:
            out.append(Observation("onnx/external-data-missing", Severity.MEDIUM,
                                   f"tensor {ref.tensor!r} names external data {ref.location!r}, not among "
                                   "the scanned files", loc, {"location": ref.location}))
            continue
        end = ref.offset + (ref.length or 0)
        if ref.offset < 0 or end > sizes[path]:
            out.append(Observation("onnx/external-data-range", Severity.HIGH,
                                   f"tensor {ref.tensor!r} reads bytes [{ref.offset}, {end}) of "
                                   f"{ref.location!r}, which has {sizes[path]}", loc,
                                   {"location": ref.location, "offset": ref.offset, "length": ref.length}))
    custom = sorted(info.domains - STANDARD_DOMAINS)
    if custom:
        out.append(Observation("onnx/custom-domain", Severity.LOW,
                               f"operators from custom domains {custom}: the runtime needs native custom-op "
                               "libraries for them", None, {"domains": custom}))
    return out


class ONNXCheck(Check):
    id = "static.onnx"
    tier = "static"
    version = "1"
    description = "ONNX external-data paths (inside the repo, present, in range) and custom op domains"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return file.name.lower().endswith(".onnx")

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        pointer = lfs_pointer_problem(file, "onnx")
        if pointer is not None:
            yield from self.findings_from([pointer], file=file.path, error=True)
            return
        try:
            with file.open() as fh:
                info = read_onnx(fh, file.size, ctx.budget())
        except WireError as exc:
            yield self.finding("onnx/malformed", Severity.HIGH, f"not a readable ONNX model: {exc}",
                               file=file.path)
            return
        sizes = {posixpath.normpath(f.path): f.size for f in ctx.target.files}
        yield from self.findings_from(
            external_problems(info, posixpath.normpath(file.path), sizes), file=file.path,
            remediation="Keep external data next to the model, by plain relative paths.")
