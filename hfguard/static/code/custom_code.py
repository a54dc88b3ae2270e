"""static.custom_code: Python shipped with a model, read as an AST and never imported.

`transformers` runs a repository's own modules when a user passes ``trust_remote_code=True``
(``auto_map`` in config.json and friends). Whatever those modules do at import time happens at
load time; what sits in functions happens when the model is built or called. So a call's severity
depends on where it sits (signatures/custom_code.yaml). Config files that require custom code are
reported too, with the files they pull in and any code they fetch from ANOTHER repository.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hfguard import signatures
from hfguard import sniff as fmts
from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Observation, Severity
from hfguard.static.code.templates import template_problems
from hfguard.static.problems import TooLarge, load_json_bounded, read_bounded
from hfguard.target import TargetFile

MAX_SOURCE_BYTES = 5 * 1024 * 1024
MAX_AST_NODES = 400_000
MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_HITS_PER_RULE = 50

# json files whose `auto_map` makes transformers import repository code
CONFIG_SUFFIX = "config.json"
_URL = re.compile(r"\b(?:https?|ftp|wss?)://[^\s'\"<>()]+", re.I)
_IPV4 = re.compile(r"(?<![\w.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\w.])")
_BASE64ISH = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
_HEXISH = re.compile(r"[0-9a-fA-F\s]+")
_ENV = {"os.environ", "os.environb"}
_ENV_GETTERS = {"os.getenv", "os.environ.get", "os.environ.pop", "os.environ.setdefault", "os.getenvb"}
_ENV_DUMPERS = {"dict", "str", "repr", "list", "json.dumps", "json.dump", "print", "tuple", "set"}
_ENV_DUMP_METHODS = {"os.environ.copy", "os.environ.items", "os.environ.keys", "os.environ.values"}


@dataclass(frozen=True)
class Rules:
    """signatures/custom_code.yaml, compiled."""

    calls: tuple[tuple[str, Severity, Severity, re.Pattern[str]], ...]
    conditions: dict[str, tuple[bool, dict[str, Any]]]   # call -> (safe when kwargs match?, kwargs)
    load_hooks: frozenset[str]
    sinks: re.Pattern[str]
    decoders: re.Pattern[str]
    named: dict[str, dict[str, Any]]
    sensitive: tuple[re.Pattern[str], ...]
    secret_env: re.Pattern[str]

    def sev(self, key: str) -> Severity:
        return Severity.parse(self.named[key]["severity"])

    def rule(self, key: str) -> str:
        return self.named[key]["rule"]


@functools.cache
def load_rules() -> Rules:
    doc = signatures.load("custom_code")
    named = doc["rules"]
    return Rules(
        calls=tuple((c["rule"], Severity.parse(c["at_import"]), Severity.parse(c["in_function"]),
                     _globs(c["names"])) for c in doc["calls"]),
        conditions={
            **{k: (True, v) for c in doc["calls"] for k, v in c.get("safe_when", {}).items()},
            **{k: (False, v) for c in doc["calls"] for k, v in c.get("unsafe_only_when", {}).items()}},
        load_hooks=frozenset(doc["load_hooks"]),
        sinks=_globs(doc["sinks"]),
        decoders=_globs(doc["decoders"]),
        named=named,
        sensitive=tuple(re.compile(p) for p in named["sensitive-path"]["patterns"]),
        secret_env=re.compile(named["secret-access"]["env_pattern"]),
    )


def _globs(patterns: Iterable[str]) -> re.Pattern[str]:
    """One compiled regex for a list of fnmatch patterns (hot path: every call in every file)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _match(name: str, patterns: re.Pattern[str]) -> bool:
    return patterns.match(name) is not None


class _TooComplex(Exception):
    pass


@dataclass
class _Hit:
    problem: Observation
    line: int

    @property
    def severity(self) -> Severity:
        # `_add` always rates its hits (Observation allows None only for checks that rate by rule id)
        assert self.problem.severity is not None
        return self.problem.severity


@dataclass
class Analysis:
    problems: list[Observation] = field(default_factory=list)
    nodes: int = 0


class _Analyser(ast.NodeVisitor):
    def __init__(self, rules: Rules, budget: Budget | None, max_nodes: int = MAX_AST_NODES) -> None:
        self.max_nodes = max_nodes
        self.r = rules
        self.budget = budget
        self.aliases: dict[str, str] = {}
        self.star_modules: list[str] = []
        self.scope: list[str] = []          # enclosing function names; empty: runs at import
        self.hits: list[_Hit] = []
        self.urls: list[str] = []
        self.network_lines: list[int] = []
        self.secret_lines: list[int] = []
        self.steps = 0
        self.renames_main = False           # `__name__ = "__main__"` makes the guard run on import

    # -- where are we ---------------------------------------------------------------------------
    def _severity(self, at_import: Severity, in_function: Severity) -> tuple[Severity, str]:
        if not self.scope:
            return at_import, "at import time"
        if self.scope[0] == "__main__":
            return min(in_function, Severity.LOW), "under if __name__ == '__main__' (not run on import)"
        if any(s in self.r.load_hooks for s in self.scope):
            return min(Severity(in_function + 1), at_import), f"in {'.'.join(self.scope)} (run on load)"
        return in_function, f"in {'.'.join(self.scope)}"

    def _add(self, rule: str, sev: Severity, msg: str, node: ast.AST, **evidence: Any) -> None:
        line = getattr(node, "lineno", 0)
        self.hits.append(_Hit(Observation(rule, sev, msg, location=f"line {line}",
                                          evidence={"line": line, **evidence}), line))

    def visit(self, node: ast.AST) -> Any:
        self.steps += 1
        if self.steps > self.max_nodes:
            raise _TooComplex
        if self.budget is not None and self.steps % 2048 == 0:
            self.budget.tick("analysing python")
        return super().visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        # `__name__ = "__main__"` before a main guard makes the guarded block run on import
        if node.id == "__name__" and isinstance(node.ctx, ast.Store):
            self.renames_main = True

    # -- names ----------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                root = a.name.split(".")[0]
                self.aliases[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return  # the repository's own modules: analysed as files of their own
        for a in node.names:
            if a.name == "*":
                self.star_modules.append(node.module)
            else:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def qualname(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.qualname(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            fn = self.qualname(node.func)
            arg = node.args[0] if node.args else None
            if fn == "getattr" and len(node.args) >= 2 and _const_str(node.args[1]) is not None:
                base = self.qualname(node.args[0])
                return f"{base}.{_const_str(node.args[1])}" if base else None
            if fn in ("__import__", "importlib.import_module", "builtins.__import__") and arg is not None:
                return _const_str(arg)
        if isinstance(node, ast.Subscript) and self.qualname(node.value) == "sys.modules":
            return _const_str(node.slice)
        return None

    # -- scopes ---------------------------------------------------------------------------------
    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, name: str) -> None:
        # decorators, defaults and annotations run when the def statement runs
        for d in getattr(node, "decorator_list", []):
            deco = None if isinstance(d, ast.Call) else self.qualname(d)
            if deco:
                self._check_call(deco, d)  # @os.system calls os.system(f)
            self.visit(d)
        args = node.args
        for d in [*args.defaults, *(k for k in args.kw_defaults if k is not None)]:
            self.visit(d)
        if not isinstance(node, ast.Lambda):
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None and a.annotation is not None:
                    self.visit(a.annotation)
            if node.returns is not None:
                self.visit(node.returns)
        self.scope.append(name)
        body = node.body if isinstance(node.body, list) else [node.body]
        for stmt in body:
            self.visit(stmt)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._function(node, node.name)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._function(node, node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._function(node, "<lambda>")

    def visit_If(self, node: ast.If) -> None:
        if not self.scope and not self.renames_main and _is_main_guard(node.test):
            self.scope.append("__main__")  # runs as a script, not on import
            for stmt in node.body:
                self.visit(stmt)
            self.scope.pop()
            for stmt in node.orelse:
                self.visit(stmt)
            return
        self.generic_visit(node)

    # -- calls ----------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        name = self.qualname(node.func)
        if name:
            self._check_call(name, node)
        self._check_getattr(name, node)
        self._check_chr_join(name, node)
        self.generic_visit(node)

    def _resolve_star(self, name: str) -> str:
        """`from subprocess import *` then `Popen(...)`: try the star-imported modules."""
        if "." in name or not self.star_modules:
            return name
        for mod in self.star_modules:
            candidate = f"{mod}.{name}"
            if any(_match(candidate, names) for _, _, _, names in self.r.calls):
                return candidate
        return name

    def _kwargs_say_safe(self, name: str, node: ast.Call | ast.expr) -> bool:
        cond = self.r.conditions.get(name)
        if cond is None:
            return False
        safe_when, wanted = cond
        given = {k.arg: k.value.value for k in getattr(node, "keywords", [])
                 if k.arg and isinstance(k.value, ast.Constant)}
        matches = all(given.get(k) == v for k, v in wanted.items())
        return matches if safe_when else not matches

    def _check_call(self, name: str, node: ast.Call | ast.expr) -> None:
        name = self._resolve_star(name)
        for rule, at_import, in_function, names in self.r.calls:
            if _match(name, names) and not self._kwargs_say_safe(name, node):
                sev, where = self._severity(at_import, in_function)
                self._add(rule, sev, f"calls {name} {where}", node, call=name, where=where)
                if rule == "custom-code/network":
                    self.network_lines.append(node.lineno)
                break
        if not isinstance(node, ast.Call):
            return
        if _match(name, self.r.sinks) and any(self._decodes(a) for a in [*node.args, *node.keywords]):
            self._add(self.r.rule("obfuscated-exec"), self.r.sev("obfuscated-exec"),
                      f"{name} runs decoded data (hidden code)", node, call=name)
        if name in _ENV_GETTERS and node.args:
            self._secret_key(_const_str(node.args[0]), node)
        if name in self.r.named["secret-access"]["calls"]:
            self._add(self.r.rule("secret-access"), self.r.sev("secret-access"),
                      f"reads the Hugging Face token through {name}", node, call=name)
            self.secret_lines.append(node.lineno)
        dumps_env = (name in _ENV_DUMP_METHODS
                     or (name in _ENV_DUMPERS and any(self.qualname(a) in _ENV for a in node.args)))
        if dumps_env:
            self._env_dump(node)

    def _decodes(self, node: ast.AST) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                fn = self.qualname(sub.func)
                if fn is None and isinstance(sub.func, ast.Attribute):
                    fn = f"?.{sub.func.attr}"  # ''.join(...), b'..'.decode(...)
                if fn and _match(fn, self.r.decoders):
                    return True
        return False

    def _check_getattr(self, name: str | None, node: ast.Call) -> None:
        if name != "getattr" or not node.args:
            return
        target = node.args[0]
        if isinstance(target, ast.Name) and target.id == "__builtins__":
            self._add(self.r.rule("builtins-access"), self.r.sev("builtins-access"),
                      "looks up a builtin by name through getattr(__builtins__, ...)", node)
            return
        base = self.qualname(target)
        risky = self.r.named["dynamic-attribute"]["modules"]
        if base in risky and len(node.args) >= 2 and _const_str(node.args[1]) is None:
            self._add(self.r.rule("dynamic-attribute"), self.r.sev("dynamic-attribute"),
                      f"reads an attribute of {base} whose name is computed", node, module=base)

    def _check_chr_join(self, name: str | None, node: ast.Call) -> None:
        if not (isinstance(node.func, ast.Attribute) and node.func.attr == "join" and node.args):
            return
        arg = node.args[0]
        chr_calls = [c for c in ast.walk(arg) if isinstance(c, ast.Call) and self.qualname(c.func) == "chr"]
        if not chr_calls:
            return
        decoded = _decode_chr_ints(arg)
        self._add(self.r.rule("char-obfuscation"), self.r.sev("char-obfuscation"),
                  "builds a string from character codes" + (f": {decoded[:80]!r}" if decoded else ""),
                  node, decoded=decoded[:200] if decoded else None)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        # chr(111) + chr(115) + ... : count the chain once, at its top
        if isinstance(node.op, ast.Add) and not getattr(node, "_hfg_seen", False):
            chain = _add_chain(node)
            chrs = [n for n in chain if isinstance(n, ast.Call) and self.qualname(n.func) == "chr"]
            for sub in ast.walk(node):
                if isinstance(sub, ast.BinOp):
                    sub._hfg_seen = True  # type: ignore[attr-defined]
            if len(chrs) >= int(self.r.named["char-obfuscation"]["min_chr_calls"]):
                decoded = "".join(chr(c.args[0].value) for c in chrs  # type: ignore[attr-defined]
                                  if _const_int(c))
                self._add(self.r.rule("char-obfuscation"), self.r.sev("char-obfuscation"),
                          f"builds a string from {len(chrs)} chr() calls", node, decoded=decoded[:200])
        self.generic_visit(node)

    # -- secrets and environment ----------------------------------------------------------------
    def visit_Subscript(self, node: ast.Subscript) -> None:
        base = self.qualname(node.value)
        if base in _ENV:
            self._secret_key(_const_str(node.slice), node)
        if isinstance(node.value, ast.Name) and node.value.id == "__builtins__":
            self._add(self.r.rule("builtins-access"), self.r.sev("builtins-access"),
                      "indexes __builtins__ by name", node)
        if (isinstance(node.value, ast.Call) and self.qualname(node.value.func) in ("globals", "vars")
                and _const_str(node.slice) == "__builtins__"):
            self._add(self.r.rule("builtins-access"), self.r.sev("builtins-access"),
                      "reaches __builtins__ through globals()", node)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "__dict__" and self.qualname(node.value) in ("builtins", "__builtins__"):
            self._add(self.r.rule("builtins-access"), self.r.sev("builtins-access"),
                      "reads builtins.__dict__", node)
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        if self.qualname(node.iter) in _ENV:
            self._env_dump(node)
        self.generic_visit(node)

    def _secret_key(self, key: str | None, node: ast.AST) -> None:
        if key and self.r.secret_env.search(key):
            self._add(self.r.rule("secret-access"), self.r.sev("secret-access"),
                      f"reads the secret environment variable {key}", node, variable=key)
            self.secret_lines.append(getattr(node, "lineno", 0))

    def _env_dump(self, node: ast.AST) -> None:
        self._add(self.r.rule("environ-dump"), self.r.sev("environ-dump"),
                  "collects the whole process environment (tokens included)", node)
        self.secret_lines.append(getattr(node, "lineno", 0))

    # -- literals -------------------------------------------------------------------------------
    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bytes):
            if len(value) >= int(self.r.named["encoded-blob"]["min_length"]):
                self._add(self.r.rule("encoded-blob"), self.r.sev("encoded-blob"),
                          f"{len(value)}-byte bytes literal", node, length=len(value))
            return
        if not isinstance(value, str):
            return
        self._check_string(value, node)

    def _check_string(self, s: str, node: ast.AST) -> None:
        named = self.r.named
        if len(s) >= int(named["encoded-blob"]["min_length"]) and " " not in s.strip()[:2000] and (
                _BASE64ISH.fullmatch(s) or _HEXISH.fullmatch(s)):
            self._add(self.r.rule("encoded-blob"), self.r.sev("encoded-blob"),
                      f"{len(s)}-character encoded-looking string literal", node, length=len(s))
        for url in _URL.findall(s)[:20]:
            lowered = url.lower()
            host_hit = next((h for h in named["suspicious-url"]["hosts"] if h in lowered), None)
            if host_hit:
                self._add(self.r.rule("suspicious-url"), self.r.sev("suspicious-url"),
                          f"URL to a paste/webhook/tunnel service: {url[:120]}", node, url=url[:300])
            else:
                self.urls.append(url[:300])
        for m in _IPV4.finditer(s):
            octets = [int(g) for g in m.groups()]
            if all(o <= 255 for o in octets) and octets[0] not in (0, 127) and not s.startswith("v"):
                self._add(self.r.rule("ip-literal"), self.r.sev("ip-literal"),
                          f"IP address literal {m.group(0)}", node, ip=m.group(0))
        if len(s) <= 4096:
            for pat in self.r.sensitive:
                if pat.search(s):
                    self._add(self.r.rule("sensitive-path"), self.r.sev("sensitive-path"),
                              f"names a sensitive path {s[:120]!r} (credentials, shell start-up, system)",
                              node, path=s[:300], pattern=pat.pattern)
                    break

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        # f"{home}/.ssh/authorized_keys": check the literal parts joined
        text = "".join(v.value for v in node.values
                       if isinstance(v, ast.Constant) and isinstance(v.value, str))
        if text:
            for pat in self.r.sensitive:
                if pat.search(text):
                    self._add(self.r.rule("sensitive-path"), self.r.sev("sensitive-path"),
                              f"names a sensitive path {text[:120]!r}", node, path=text[:300])
                    break
        for v in node.values:
            if not isinstance(v, ast.Constant):
                self.visit(v)


def _const_str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _const_int(call: ast.Call) -> bool:
    arg = call.args[0] if call.args else None
    return isinstance(arg, ast.Constant) and isinstance(arg.value, int) and 0 <= arg.value < 0x110000


def _add_chain(node: ast.AST) -> list[ast.AST]:
    out: list[ast.AST] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Add):
            stack += [n.right, n.left]
        else:
            out.append(n)
    return out


def _decode_chr_ints(node: ast.AST) -> str | None:
    """''.join(chr(c) for c in [111, 115]) -> 'os' when the codes are literal."""
    ints = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, int)
            and not isinstance(n.value, bool)]
    if ints and all(0 <= i < 0x110000 for i in ints):
        return "".join(chr(i) for i in ints)
    return None


def _is_main_guard(test: ast.AST) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and _const_str(test.comparators[0]) == "__main__")


def analyse_source(source: str | bytes, filename: str = "<model code>", budget: Budget | None = None,
                   max_nodes: int = MAX_AST_NODES) -> Analysis:
    """Everything notable in one Python module, without importing or running it."""
    rules = load_rules()
    out = Analysis()
    try:
        tree = ast.parse(source, filename=filename)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        out.problems.append(Observation(
            "custom-code/unparsable", Severity.HIGH,
            f"Python that cannot be parsed cannot be vetted: {type(exc).__name__}: "
            f"{str(exc)[:200]}", location=f"line {getattr(exc, 'lineno', 0) or 0}"))
        return out
    an = _Analyser(rules, budget, max_nodes)
    try:
        an.visit(tree)
    except _TooComplex:
        out.problems.append(Observation("custom-code/too-complex", Severity.HIGH,
                                        f"more than {max_nodes} syntax nodes; not analysed",
                                        evidence={"limit": max_nodes}))
        return out
    except RecursionError:
        out.problems.append(Observation("custom-code/too-complex", Severity.HIGH,
                                        "nesting too deep to analyse"))
        return out
    out.nodes = an.steps
    counts: dict[str, int] = {}
    for hit in sorted(an.hits, key=lambda h: (-int(h.severity), h.line)):
        counts[hit.problem.rule] = counts.get(hit.problem.rule, 0) + 1
        if counts[hit.problem.rule] <= MAX_HITS_PER_RULE:
            out.problems.append(hit.problem)
    if an.secret_lines and an.network_lines:
        out.problems.append(Observation(
            rules.rule("exfiltration"), rules.sev("exfiltration"),
            "reads secrets or the environment and talks to the network in the same module",
            location=f"line {an.secret_lines[0]}",
            evidence={"secret_lines": an.secret_lines[:20], "network_lines": an.network_lines[:20]}))
    if an.urls:
        out.problems.append(Observation(rules.rule("url"), rules.sev("url"), f"{len(an.urls)} URL literal(s)",
                                        evidence={"urls": sorted(set(an.urls))[:20]}))
    return out


# -- configs that pull in code ------------------------------------------------------------------

@dataclass
class CodeRef:
    key: str          # e.g. auto_map.AutoModel
    ref: str          # e.g. modeling_x.XModel or org/repo--modeling_x.XModel
    repo: str | None
    module_file: str


def code_refs(doc: Any, name: str) -> list[CodeRef]:
    """Class references in a config that make a loader import repository code."""
    raw: list[tuple[str, str]] = []
    if isinstance(doc, dict):
        auto_map = doc.get("auto_map")
        if isinstance(auto_map, dict):
            for key, val in auto_map.items():
                for v in val if isinstance(val, list) else [val]:
                    if isinstance(v, str):
                        raw.append((f"auto_map.{key}", v))
        pipelines = doc.get("custom_pipelines")
        if isinstance(pipelines, dict):
            for task, spec in pipelines.items():
                for k in ("impl", "pt", "tf"):
                    v = spec.get(k) if isinstance(spec, dict) else None
                    for item in v if isinstance(v, list) else [v]:
                        if isinstance(item, str) and item:
                            raw.append((f"custom_pipelines.{task}.{k}", item))
    if name == "modules.json" and isinstance(doc, list):
        for m in doc:
            t = m.get("type") if isinstance(m, dict) else None
            if isinstance(t, str) and not t.startswith("sentence_transformers."):
                raw.append((f"modules.{m.get('name', '?')}", t))
    refs = []
    for key, ref in raw:
        repo, _, local = ref.rpartition("--")
        module = local.rsplit(".", 1)[0] if "." in local else local
        refs.append(CodeRef(key, ref, repo or None, module.replace(".", "/") + ".py"))
    return refs


def _templates_in(doc: Any) -> list[Observation]:
    """chat_template in tokenizer_config.json / chat_template.json: a string or [{name, template}]."""
    tpl = doc.get("chat_template") if isinstance(doc, dict) else None
    items = [("chat_template", tpl)] if isinstance(tpl, str) else [
        (f"chat_template.{t.get('name', i)}", t.get("template")) for i, t in enumerate(tpl or [])
        if isinstance(t, dict)] if isinstance(tpl, list) else []
    out: list[Observation] = []
    for where, text in items:
        if isinstance(text, str):
            out += template_problems(text, where)
    return out


def _escapes(rel: str) -> bool:
    return rel.startswith(("/", "~")) or "\\" in rel or ".." in rel.split("/") or ":" in rel


_TEMPLATE_REMEDIATION = "Do not render this chat template."


class CustomCodeCheck(Check):
    id = "static.custom_code"
    THRESHOLDS = {"max-source-bytes": MAX_SOURCE_BYTES, "max-ast-nodes": MAX_AST_NODES}
    tier = "static"
    version = "1"
    description = "Python shipped with a model (AST, never imported); configs that require remote code"

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        name = file.name.lower()
        if name.endswith((".py", ".pyc", ".pyw", ".jinja")) or fmt == fmts.PYTHON:
            return True
        return fmt == fmts.JSON and (name.endswith(CONFIG_SUFFIX) or name in ("modules.json",
                                                                            "chat_template.json"))

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        name = file.name.lower()
        if name.endswith(".json"):
            yield from self._check_config(file, ctx)
            return
        if name.endswith(".jinja"):
            try:
                text = read_bounded(file, MAX_CONFIG_BYTES).decode("utf-8", "replace")
            except TooLarge as exc:
                yield self.finding("custom-code/too-large", Severity.MEDIUM, f"template not checked: {exc}",
                                   file=file.path)
                return
            yield from self.findings_from(template_problems(text, "template"), file=file.path,
                                          remediation=_TEMPLATE_REMEDIATION)
            return
        if name.endswith(".pyc"):
            yield self.finding("custom-code/compiled-python", Severity.MEDIUM,
                               "compiled Python bytecode shipped with the model cannot be vetted",
                               file=file.path, remediation="Ship source, or remove the .pyc file.")
            return
        yield from self._check_python(file, fmt, ctx)

    def _check_python(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterator[Finding]:
        limit = int(ctx.threshold(self.id, "max-source-bytes", MAX_SOURCE_BYTES))
        try:
            data = read_bounded(file, limit)
        except TooLarge as exc:
            yield self.finding("custom-code/too-large", Severity.HIGH,
                               f"Python file not analysed: {exc}", file=file.path,
                               evidence={"size": file.size, "limit": limit})
            return
        max_nodes = int(ctx.threshold(self.id, "max-ast-nodes", MAX_AST_NODES))
        result = analyse_source(data, file.path, ctx.budget(), max_nodes)
        yield from self.findings_from(result.problems, file=file.path,
                                      remediation="Read this code before passing trust_remote_code=True.")

    def _check_config(self, file: TargetFile, ctx: ScanContext) -> Iterator[Finding]:
        try:
            doc = load_json_bounded(file, MAX_CONFIG_BYTES)
        except ValueError as exc:
            yield self.finding("custom-code/config-unreadable", Severity.LOW,
                               f"config not checked for remote code: {str(exc)[:200]}", file=file.path)
            return
        yield from self.findings_from(_templates_in(doc), file=file.path, remediation=_TEMPLATE_REMEDIATION)
        refs = code_refs(doc, file.name)
        if not refs:
            return
        folder = posixpath.dirname(file.path)
        present = {f.path for f in ctx.target.files}
        local = sorted({r.module_file for r in refs if r.repo is None})
        yield self.finding(
            "custom-code/requires-remote-code", Severity.MEDIUM,
            "model requires custom code (trust_remote_code): "
            f"{', '.join(local) or 'from other repositories'}",
            file=file.path, location=refs[0].key,
            evidence={"references": {r.key: r.ref for r in refs}, "files": local},
            remediation="Review these files (hfguard reports on each) before trust_remote_code=True.")
        for r in refs:
            if r.repo is not None:
                yield self.finding(
                    "custom-code/cross-repo-code", Severity.HIGH,
                    f"{r.key} loads code from another repository, {r.repo} (not scanned, not pinned here)",
                    file=file.path, location=r.key, evidence={"ref": r.ref, "repo": r.repo},
                    remediation=f"Scan {r.repo} too, and pin its revision, before trusting this model.")
            elif _escapes(r.module_file):
                yield self.finding("custom-code/auto-map-path", Severity.HIGH,
                                   f"{r.key} names a module outside the repository: {r.ref!r}",
                                   file=file.path, location=r.key, evidence={"ref": r.ref})
        for module_file in local:
            if _escapes(module_file):
                continue
            path = posixpath.join(folder, module_file) if folder else module_file
            if path not in present:
                yield self.finding(
                    "custom-code/missing-module", Severity.MEDIUM,
                    f"custom code {module_file} is referenced but not among the scanned files",
                    file=file.path, location=module_file, evidence={"module": module_file})
