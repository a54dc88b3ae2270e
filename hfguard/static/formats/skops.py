"""static.skops: skops (`.skops`) files whose schema names types or functions skops does not trust.

A skops file is a zip with `schema.json`: a tree of nodes, each naming a loader (`__loader__`), a
module and a class or function that `skops.io.load` imports and rebuilds. skops refuses untrusted
names unless the caller passes them in `trusted=` — commonly the whole `get_untrusted_types()`
list, which trusts whatever the file asks for. So every name outside skops' own default trusted
set is reported: a callable the pickle signatures deny (`builtins.eval`, `os.system`,
`operator.methodcaller` ...) at that signature's severity, any other at medium. Function, method,
operator, partial and constructor-from-reduce nodes are never trusted by default (skops' own rule); an
sklearn name counts as trusted only where the pickle signatures allow it (an sklearn module holds its
own test helpers and whatever it imports, not only estimators).
The arrays beside the schema are .npy members that static.serialization opens.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from hfguard import sniff as fmts
from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.formats.jsonwalk import json_objects
from hfguard.static.pickle.rules import load_rules
from hfguard.static.pickle.streams import StreamLimit
from hfguard.static.pickle.zipdir import ZipEntry, ZipError, file_zip_directory
from hfguard.static.pickle.zipmembers import MEMBER_ERRORS, read_member
from hfguard.target import TargetFile

MAX_SCHEMA_BYTES = 64 * 1024 * 1024

# skops' default trusted set, by loader (skops/io/_trusted_types.py and each Node's `trusted`)
_BUILTINS = {f"builtins.{t}" for t in ("int", "float", "str", "bool", "list", "set", "map", "tuple", "dict",
                                       "bytes", "bytearray", "slice", "NoneType", "complex")}
_CONTAINERS = _BUILTINS | {"collections.OrderedDict", "collections.defaultdict"}
_PLAIN_LOADERS = {"DictNode", "ListNode", "SetNode", "TupleNode", "JsonNode", "BytesNode", "BytearrayNode",
                  "SliceNode", "DefaultDictNode"}
_NUMPY_LOADERS = {"NdArrayNode", "MaskedArrayNode", "RandomStateNode", "RandomGeneratorNode", "DTypeNode",
                  "SparseMatrixNode"}
_SKLEARN_LOADERS = {"ObjectNode", "ReduceNode", "TreeNode", "LossNode"}
# ConstructorFromReduceNode calls the named callable with arguments from the file: skops trusts no
# name there by default (an sklearn module's test helper or re-exported os.remove is callable too)
_NEVER_TRUSTED = {"MethodNode", "OperatorFuncNode", "PartialNode", "ConstructorFromReduceNode"}
# sklearn internals skops rebuilds through dedicated nodes (TreeNode, LossNode: their state is
# arrays, not callables, so they are trusted here); TreePredictor stays untrusted (skops:
# its node indices are not bounds-checked, a crafted file crashes inference)
_SKLEARN_UNTRUSTED = {"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}


def skops_trusts(loader: str, module: str, name: str) -> bool:
    full = f"{module}.{name}"
    root = module.split(".")[0]
    if loader in _NEVER_TRUSTED:
        return False
    if loader in _PLAIN_LOADERS or loader == "TypeNode":
        return full in _CONTAINERS or (loader == "TypeNode" and root == "numpy")
    if loader in _NUMPY_LOADERS:
        return root == "numpy" or module.startswith("scipy.sparse")
    if loader == "FunctionNode":   # numpy and scipy.special ufuncs
        return module in ("numpy", "scipy.special", "numpy._core.umath", "numpy.core.umath")
    if loader in _SKLEARN_LOADERS:
        # skops trusts sklearn's estimators and internals, not every name an sklearn module holds:
        # LossNode and ReduceNode call the named class with file-supplied arguments, so the name must
        # be one the pickle signatures allow (sklearn.utils._testing's script runner is not)
        return (root == "sklearn" and full not in _SKLEARN_UNTRUSTED
                and load_rules().classify(full, name).status == "allowed")
    return False


def _nodes(schema: Any, budget: Budget | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """The schema's nodes that name a loader, with their JSON paths."""
    for path, node in json_objects(schema, "skops schema", budget):
        if isinstance(node.get("__loader__"), str):
            yield path, node


def schema_problems(schema: Any, budget: Budget | None = None) -> list[Observation]:
    rules = load_rules()
    out: list[Observation] = []
    seen: set[tuple[str, str, str | None]] = set()
    for path, node in _nodes(schema, budget):
        loader, module, name = node["__loader__"], node.get("__module__"), node.get("__class__")
        if not isinstance(module, str) or not isinstance(name, str):
            out.append(Observation("skops/bad-schema", Severity.MEDIUM,
                                   f"{loader} without a module and class name", path))
            continue
        full = f"{module}.{name}"
        content = node.get("content") if loader == "MethodNode" else None
        func = content.get("func") if isinstance(content, dict) else None
        attr = func if isinstance(func, str) else None
        if skops_trusts(loader, module, name) or (loader, full, attr) in seen:
            continue
        seen.add((loader, full, attr))
        c = rules.classify(f"{full}.{attr}" if attr else full, f"{name}.{attr}" if attr else name)
        if c.status == "denied" and c.rule is not None:
            what = f"{full}.{attr}" if attr else full
            out.append(Observation("skops/dangerous-type", c.rule.severity,
                                   f"{loader} names {what} ({c.rule.description})",
                                   path, {"type": full, "loader": loader, "signature": c.rule.id}))
        elif attr is not None and attr.startswith("__"):
            out.append(Observation("skops/dangerous-type", Severity.HIGH,
                                   f"MethodNode reaches {full}.{attr}, a dunder attribute", path,
                                   {"type": full, "loader": loader, "method": attr}))
        else:
            out.append(Observation("skops/untrusted-type", Severity.MEDIUM,
                                   f"{loader} {full} is outside skops' default trusted types; loading it "
                                   "needs trusted=[...]", path, {"type": full, "loader": loader}))
    return out


class SkopsCheck(Check):
    id = "static.skops"
    tier = "static"
    version = "1"
    description = "skops files: schema.json names outside skops' default trusted types (eval, operator ...)"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return fmt == fmts.ZIP or file.name.lower().endswith(".skops")

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        named = file.name.lower().endswith(".skops")
        problems: list[Observation] = []
        with file.open() as fh:
            try:  # our bounded directory reader, never zipfile on hostile input
                listed = {e.name: e for e in file_zip_directory(file, ctx)
                          if e.index >= 0}   # the last of duplicates, as zipfile (and skops) reads
            except (ZipError, OSError, ValueError, struct.error) as exc:
                if named:
                    problems.append(Observation("skops/bad-schema", Severity.HIGH,
                                                f"unreadable .skops file: {exc}"))
            else:
                if "schema.json" in listed:
                    problems = self._schema(fh, listed["schema.json"], ctx)
                elif named:
                    problems.append(Observation("skops/bad-schema", Severity.HIGH,
                                                ".skops file without schema.json"))
        yield from self.findings_from(
            problems, file=file.path,
            remediation="Do not load with trusted=get_untrusted_types(); review each untrusted type, "
                        "or ask for a plain sklearn estimator file.")

    def _schema(self, fh: Any, entry: ZipEntry, ctx: ScanContext) -> list[Observation]:
        if entry.usize > MAX_SCHEMA_BYTES:
            return [Observation("skops/bad-schema", Severity.MEDIUM,
                                f"{entry.usize}-byte schema not analysed", "schema.json")]
        try:
            schema = json.loads(read_member(fh, entry, MAX_SCHEMA_BYTES, ctx.budget()).decode("utf-8"))
        except (StreamLimit, RecursionError, *MEMBER_ERRORS) as exc:
            return [Observation("skops/bad-schema", Severity.MEDIUM,
                                f"schema.json cannot be read: {str(exc)[:200]}", "schema.json")]
        if not isinstance(schema, dict) or "protocol" not in schema:
            return []   # some other zip with a schema.json: not a skops dump
        try:
            return schema_problems(schema, ctx.budget())
        except ValueError as exc:
            return [Observation("skops/bad-schema", Severity.MEDIUM, str(exc), "schema.json")]
