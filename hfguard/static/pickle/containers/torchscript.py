"""TorchScript archives (torch.jit.save): the compiled code in `<archive>/code/**.py` runs when
torch.jit.load rebuilds the module, so it is read as what it is, Python-like source, parsed with
`ast` (never executed) and judged by what it calls:

  ops outside the stock namespaces (aten, prim ...)  torchscript/custom-op     the op's native library
  custom classes (torch.classes.*)                    torchscript/custom-class  must be loaded first
  torch.ops.load_library, eval/exec/__import__, os., subprocess., dunder walks ...
                                                      torchscript/dangerous-call
  source that does not parse or is too large          torchscript/unreadable-code
A stock module compiles to aten/prim calls only: one info finding, and the `__torch__` classes the
archive's own code defines are not "unknown globals" of its pickles (`script_classes`).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import IO

from hfguard.findings import Severity
from hfguard.static.pickle.containers.common import STREAM_ERRORS, Scanner, join
from hfguard.static.pickle.zipdir import ZipEntry

MAX_FILE = 8 << 20  # bytes of source per code file
MAX_TOTAL = 64 << 20  # bytes of source per archive
# op namespaces torch itself registers (ops.<ns>.<op> / torch.ops.<ns>.<op>)
STOCK_NAMESPACES = {
    "aten", "prim", "quantized", "_quantized", "prepacked", "mkldnn", "mkldnn_prepacked", "xnnpack",
    "_caffe2", "profiler", "_c10d_functional", "c10d_functional", "_dtensor", "sparse", "fbgemm",
}  # fmt: skip
DANGEROUS_NAMES = {
    "eval", "exec", "compile", "__import__", "open", "globals", "locals", "vars", "breakpoint",
    "setattr", "delattr", "__builtins__", "builtins", "os", "posix", "nt", "sys",
    "subprocess", "importlib", "socket", "shutil", "pickle", "marshal", "ctypes", "runpy", "pty",
}  # fmt: skip
DANGEROUS_TORCH = {"load", "save", "hub", "from_file", "_C", "package", "jit", "utils", "compile"}
DANGEROUS_DUNDERS = {
    "__globals__", "__subclasses__", "__builtins__", "__code__", "__closure__", "__dict__",
    "__class__", "__bases__", "__base__", "__mro__", "__reduce__", "__reduce_ex__",
    "__getattribute__", "__loader__", "__spec__", "__self__", "__func__", "__import__",
}  # fmt: skip


def is_torchscript(entries: list[ZipEntry]) -> bool:
    return any(_code_path(e.name) is not None for e in entries)


def _code_path(name: str) -> list[str] | None:
    """`<archive>/code/a/b.py` -> ["a", "b"]; None for anything else."""
    parts = name.split("/")
    if len(parts) >= 3 and parts[1] == "code" and parts[-1].endswith(".py"):
        return [*parts[2:-1], parts[-1][:-3]]
    return None


def analyse_torchscript(
    sc: Scanner, entries: list[ZipEntry], where: str, open_member: Callable[[ZipEntry], IO[bytes]]
) -> None:
    defined: set[str] = set()
    namespaces: set[str] = set()
    total = files = 0
    for e in entries:
        path = _code_path(e.name)
        if path is None or e.data_offset is None:
            continue
        mwhere = join(where, e.name)
        sc.budget.tick("torchscript code")
        total += e.usize
        if e.usize > MAX_FILE or total > MAX_TOTAL:
            _unreadable(sc, mwhere, f"code file of {e.usize} bytes is over the bound ({MAX_FILE} per file)")
            continue
        try:
            source = open_member(e).read(MAX_FILE + 1)
            tree = ast.parse(source.decode("utf-8"), e.name)
        except (SyntaxError, UnicodeDecodeError, RecursionError, MemoryError, *STREAM_ERRORS) as exc:
            _unreadable(sc, mwhere, f"code does not parse: {type(exc).__name__}: {exc}")
            continue
        files += 1
        module = ".".join(path)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                defined.add(f"{module}.{node.name}")
        _judge(sc, tree, mwhere, namespaces)
    sc.script_classes[where] = defined
    sc.observe(
        "torchscript/archive",
        f"TorchScript archive: {files} code files analysed (torch.jit.load compiles and runs them)",
        where,
        evidence={"code_files": files, "classes": sorted(defined)[:50], "op_namespaces": sorted(namespaces)},
        severity=Severity.INFO,
    )


def _unreadable(sc: Scanner, where: str, message: str) -> None:
    sc.observe("torchscript/unreadable-code", message, where, severity=Severity.MEDIUM)


def _dotted(node: ast.AST) -> list[str] | None:
    """`a.b.c` -> ["a", "b", "c"]; None when the chain does not start at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the code binds itself (arguments, assignments, loop targets, defs): locals, whatever
    they are called."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
    return bound


def _judge(sc: Scanner, tree: ast.AST, where: str, namespaces: set[str]) -> None:
    seen: set[tuple[str, str]] = set()
    local = _bound_names(tree)

    def report(rule: str, severity: Severity, what: str, message: str, line: int) -> None:
        if (rule, what) in seen:
            return
        seen.add((rule, what))
        sc.observe(rule, message, where, evidence={"name": what, "line": line}, severity=severity)

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in DANGEROUS_DUNDERS:
            line = getattr(node, "lineno", 0)
            report("torchscript/dangerous-call", Severity.HIGH, node.attr,
                   f"TorchScript code walks {node.attr}, a sandbox-escape pattern", line)
        if isinstance(node, ast.Name) and node.id in DANGEROUS_NAMES and node.id not in local:
            report("torchscript/dangerous-call", Severity.HIGH, node.id,
                   f"TorchScript code names {node.id}: not a TorchScript builtin", node.lineno)
        if not isinstance(node, ast.Attribute) or isinstance(getattr(node, "ctx", None), ast.Store):
            continue
        parts = _dotted(node)
        if not parts or parts[0] in local:
            continue
        line = getattr(node, "lineno", 0)
        if parts[0] == "torch" and len(parts) >= 2:
            parts = parts[1:] if parts[1] in ("ops", "classes") else parts
            if parts[0] == "torch" and parts[1] in DANGEROUS_TORCH:
                name = ".".join(parts[:2])
                report("torchscript/dangerous-call", Severity.HIGH, name,
                       f"TorchScript code reaches {name}", line)
                continue
        if parts[0] == "__torch__" and parts[1:3] == ["torch", "classes"]:
            parts = parts[2:]
        if parts[0] == "ops" and len(parts) >= 3:
            ns = parts[1]
            if ns == "load_library" or parts[2] == "load_library":
                report("torchscript/dangerous-call", Severity.HIGH, "torch.ops.load_library",
                       "TorchScript code loads a native library (torch.ops.load_library)", line)
            elif ns in STOCK_NAMESPACES and parts[2] in DANGEROUS_TORCH:
                # the op behind torch.<name>, called by its op name (ops.aten.from_file maps a file)
                name = ".".join(parts[:3])
                report("torchscript/dangerous-call", Severity.HIGH, name,
                       f"TorchScript code reaches {name} (torch.{parts[2]} as an op)", line)
            elif ns not in STOCK_NAMESPACES:
                name = ".".join(parts[:3])
                report("torchscript/custom-op", Severity.MEDIUM, name,
                       f"custom op {name}: torch.jit.load needs its native library, code outside torch",
                       line)
            else:
                namespaces.add(ns)
        elif parts[0] == "ops" and len(parts) == 2 and parts[1] == "load_library":
            report("torchscript/dangerous-call", Severity.HIGH, "torch.ops.load_library",
                   "TorchScript code loads a native library (torch.ops.load_library)", line)
        elif parts[0] == "classes" and len(parts) >= 3:
            name = "torch.classes." + ".".join(parts[1:3])
            report("torchscript/custom-class", Severity.MEDIUM, name,
                   f"custom class {name}: implemented in a native library outside torch", line)
