"""NeMo 2 `context/io.json`: the model's fiddle config, serialized by fiddle's JSON format. Every
Python reference in it is `{"type": "pyref", "module": M, "name": N}`; `nemo.lightning.io.
load_context` imports each one and `fdl.build` calls the configured ones with the file's arguments,
so a pyref is judged like a Hydra `_target_` (signatures/hydra.yaml). fiddle writes containers and
paths as pyrefs to their types (builtins.tuple, pathlib.PosixPath): those are data, not calls.
NeMo's newer SafePyrefPolicy refuses modules outside its trusted set unless trust_remote_code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hfguard.budget import Budget
from hfguard.findings import Observation, Severity
from hfguard.static.formats.jsonwalk import json_objects

# types fiddle's serializer itself writes as pyrefs for containers, leaves and paths
_DATA_TYPES = {f"builtins.{t}" for t in ("tuple", "list", "dict", "set", "frozenset", "bytes", "str", "int",
                                          "float", "bool", "complex", "slice")} | {
    f"pathlib.{t}" for t in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath",
                             "PureWindowsPath")}
_FIDDLE_ROOTS = {"fiddle", "typing", "collections", "enum", "dataclasses"}


def is_io_json(path: str) -> bool:
    return path.replace("\\", "/").lower().endswith("context/io.json")


def pyrefs(doc: Any, budget: Budget | None = None) -> Iterator[tuple[str, str]]:
    """(dotted name, JSON path) of every pyref; iterative and bounded."""
    for path, node in json_objects(doc, "NeMo io.json", budget):
        if node.get("type") == "pyref":
            module, name = node.get("module"), node.get("name")
            yield (f"{module}.{name}" if isinstance(module, str) and isinstance(name, str)
                   else repr((module, name))[:200]), path


def io_json_problems(doc: Any, judge: Any, allowed: set[str], budget: Budget | None = None
                     ) -> list[Observation]:
    """`judge(target, shown, location, allowed)` is the Hydra target judgement (nemo.py)."""
    out: list[Observation] = []
    seen: set[str] = set()
    try:
        refs = list(pyrefs(doc, budget))
    except ValueError as exc:
        return [Observation("nemo/bad-config", Severity.MEDIUM, str(exc), "io.json")]
    for target, path in refs:
        if target in seen or target in _DATA_TYPES:
            continue
        seen.add(target)
        out += judge(target, f"pyref {target!r}", f"io.json:{path}", allowed | _FIDDLE_ROOTS)
    return out
