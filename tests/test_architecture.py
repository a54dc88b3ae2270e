"""The layout holds: every module imports on its own, no import cycles, commands never import the
group, the light paths (static tier, hooks) stay free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hfguard

PACKAGE = Path(hfguard.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    mods = _modules()
    # the root package only re-exports lazily; every import of it is satisfied first
    return {m: {n for n in _imports(p, module_level_only) if n in mods and n not in (m, "hfguard")}
            for m, p in mods.items()}


def test_no_import_cycles_even_through_function_level_imports():
    assert _cycles(_graph(module_level_only=False)) == []


def test_every_module_imports_alone_in_a_fresh_interpreter():
    def alone(name: str) -> tuple[str, str]:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True,
                              timeout=120)
        return name, proc.stderr.strip().splitlines()[-1] if proc.returncode else ""

    with ThreadPoolExecutor(4) as pool:
        names = [m for m in _modules() if m != "hfguard.__main__"]
        failures = {n: err for n, err in pool.map(alone, names) if err}
    assert failures == {}


def test_command_modules_never_import_the_group():
    graph = _graph(module_level_only=False)
    commands = [m for m in graph if m.startswith("hfguard.commands")]
    assert len(commands) >= 7
    assert [m for m in commands if "hfguard.cli" in graph[m]] == []


def test_light_paths_do_not_import_torch_or_numpy():
    script = ("import sys, hfguard.cli, hfguard.hooks.precommit, hfguard.hooks.staged, "
              "hfguard.static.pickle.check, hfguard.static.provenance; "
              "print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_wheel_ships_the_package_and_its_data_but_not_the_test_organisms(tmp_path):
    root = PACKAGE.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True, timeout=300)
    import zipfile

    [wheel] = tmp_path.glob("hfguard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(("testing/", "tests/", "bench/"))]
    assert "hfguard/_signatures/pickle_globals.yaml" in names
    assert "hfguard/_signatures/rules/pickle.yaml" in names
    assert "hfguard/report/report.css" in names and "hfguard/hooks/_githooks/pre-commit" in names
