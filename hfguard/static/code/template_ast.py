"""Names a Jinja chat template builds, read from its syntax tree (jinja2's parser; nothing is
rendered). SSTI payloads hide the dunder names the text scan looks for: escapes
(`'\\x5f\\x5fglobals\\x5f\\x5f'`, decoded by the lexer), concatenation (`'__in' ~ 'it__'`, `'_'*2`),
`join` of pieces, a `set` variable holding a piece. Each string expression is folded to its value
where the template alone decides it (bounded); a subscript whose key is built at render time from
strings is reported as such. Without jinja2 (an optional dependency) this returns nothing and the
text scan stands alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 4096      # longest folded string
MAX_REPEAT = 64      # 'x' * n folded only up to this n
MAX_NODES = 200_000  # syntax-tree nodes walked
MAX_SOURCE = 512 * 1024  # characters parsed (jinja2 parses ~0.3 MB/s here); real templates are < 50 kB
_BUILDERS = {"join", "format", "replace", "reverse", "string", "lower", "upper", "trim", "first", "last"}
# callables a renderer puts in scope (Jinja's globals, transformers' helpers): an attribute or item of
# the global itself is only ever a way into Python (`cycler.__init__`, `lipsum[...]`)
_GLOBAL_CALLABLES = {"cycler", "joiner", "namespace", "lipsum", "range", "dict", "self", "raise_exception",
                     "strftime_now", "config", "request", "url_for", "get_flashed_messages"}
_UNKNOWN = object()


@dataclass
class Built:
    strings: list[str] = field(default_factory=list)   # what the expressions fold to
    gadgets: list[str] = field(default_factory=list)   # shapes only SSTI needs
    unanalysed: str | None = None                      # why the tree was not walked


def built_strings(template: str) -> Built | None:
    """Every string the template's expressions fold to, and gadget shapes (subscripts keyed by
    render-time string building, items or attributes of a global callable); None when jinja2 is
    missing or cannot parse the text (then no renderer built on it can either)."""
    try:
        from jinja2 import Environment, nodes
        from jinja2.exceptions import TemplateError
    except ImportError:
        return None
    if len(template) > MAX_SOURCE:
        return Built(unanalysed=f"{len(template)} characters, over the {MAX_SOURCE} parsed")
    try:  # parse only, never compiled or rendered; with the tags transformers' renderer knows
        tree = Environment(extensions=["jinja2.ext.loopcontrols", _generation_tag()]).parse(template)
    except (TemplateError, RecursionError, MemoryError, ValueError):
        return None  # jinja2 itself could not compile it either: nothing renders
    all_nodes = _walk(tree)
    if all_nodes is None:
        return Built(unanalysed=f"more than {MAX_NODES} syntax nodes")
    env: dict[str, Any] = {}
    fold = _Folder(env, nodes)
    strings: list[str] = []
    built_keys: list[str] = []
    for node in all_nodes:
        if not isinstance(node, nodes.Expr):
            continue
        if isinstance(node, nodes.Const):
            if isinstance(node.value, str):
                strings.append(node.value)
            continue
        value = fold(node)
        if isinstance(value, str):
            strings.append(value)
        if isinstance(node, nodes.Getitem) and fold(node.arg) is _UNKNOWN \
                and _builds_string(node.arg, nodes):
            built_keys.append(f"subscript keyed by {type(node.arg).__name__}")
        if isinstance(node, (nodes.Getitem, nodes.Getattr)) and isinstance(node.node, nodes.Name) \
                and node.node.name in _GLOBAL_CALLABLES:
            kind = "item" if isinstance(node, nodes.Getitem) else "attribute"
            built_keys.append(f"{kind} of {node.node.name}")
    fold = _Folder(env, nodes)
    for assign in all_nodes:  # `set` variables in document order, then their uses fold again
        if isinstance(assign, nodes.Assign) and isinstance(assign.target, nodes.Name):
            env[assign.target.name] = fold(assign.node)
    if env:
        fold = _Folder(env, nodes)  # names now stand for their values: fold again
        for node in all_nodes:
            if not isinstance(node, (nodes.Getitem, nodes.Concat, nodes.Add, nodes.Filter)):
                continue
            target = node.arg if isinstance(node, nodes.Getitem) else node
            value = fold(target)
            if isinstance(value, str):
                strings.append(value)
    return Built(strings, built_keys)


def _generation_tag() -> type:
    """transformers' `{% generation %}...{% endgeneration %}` (AssistantTracker), parsed as a block."""
    from jinja2 import nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return Generation


def _walk(tree: Any) -> list[Any] | None:
    """Every node, iteratively (jinja2's find_all recurses: `x[0][0]...` 200k deep overflows it);
    None past MAX_NODES."""
    out: list[Any] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        out.append(node)
        if len(out) > MAX_NODES:
            return None
        stack.extend(reversed(list(node.iter_child_nodes())))  # document order: `set`s in sequence
    return out


def _builds_string(node: Any, nodes: Any, depth: int = 0) -> bool:
    """A key made at render time by joining strings: `~`, `+` with a string, a string filter."""
    if depth > 64:
        return True  # a key built from more than 64 pieces is no ordinary index
    if isinstance(node, nodes.Concat):
        return True
    if isinstance(node, nodes.Add):
        return _str_const(node.left, nodes) or _str_const(node.right, nodes) \
            or _builds_string(node.left, nodes, depth + 1) or _builds_string(node.right, nodes, depth + 1)
    if isinstance(node, nodes.Mul):
        return _str_const(node.left, nodes) or _str_const(node.right, nodes)
    return isinstance(node, nodes.Filter) and node.name in _BUILDERS


def _str_const(node: Any, nodes: Any) -> bool:
    return isinstance(node, nodes.Const) and isinstance(node.value, str)


class _Folder:
    """Folds string expressions to their values; each node once per environment (memo), so a
    100k-node expression costs 100k steps, not 100k x depth."""

    def __init__(self, env: dict[str, Any], nodes: Any) -> None:
        self.env, self.nodes = env, nodes
        self.memo: dict[int, Any] = {}

    def __call__(self, node: Any, depth: int = 0) -> Any:
        key = id(node)
        if key not in self.memo:
            self.memo[key] = self._fold(node, depth)
        return self.memo[key]

    def _fold(self, node: Any, depth: int) -> Any:
        """The value of a string expression when the template alone decides it, else _UNKNOWN."""
        nodes = self.nodes
        if depth > 64:
            return _UNKNOWN
        value: Any = _UNKNOWN
        if isinstance(node, nodes.Const) and isinstance(node.value, (str, int)) \
                and not isinstance(node.value, bool):
            value = node.value
        elif isinstance(node, nodes.Name):
            value = self.env.get(node.name, _UNKNOWN)
        elif isinstance(node, (nodes.List, nodes.Tuple)):
            items = [self(n, depth + 1) for n in node.items]
            value = _UNKNOWN if any(i is _UNKNOWN for i in items) else items
        elif isinstance(node, nodes.Concat):
            parts = [self(n, depth + 1) for n in node.nodes]
            value = _UNKNOWN if any(p is _UNKNOWN or isinstance(p, list) for p in parts) \
                else "".join(str(p) for p in parts)
        elif isinstance(node, (nodes.Add, nodes.Mul)):
            value = _arith(type(node).__name__, self(node.left, depth + 1), self(node.right, depth + 1))
        elif isinstance(node, nodes.Filter) and node.name in _BUILDERS and node.node is not None:
            args = [self(a, depth + 1) for a in node.args]
            value = _filter(node.name, self(node.node, depth + 1), args)
        if isinstance(value, str) and len(value) > MAX_TEXT:
            return _UNKNOWN
        return value


def _arith(op: str, left: Any, right: Any) -> Any:
    if left is _UNKNOWN or right is _UNKNOWN:
        return _UNKNOWN
    if op == "Add" and isinstance(left, str) and isinstance(right, str):
        return left + right
    if op == "Mul":
        text, times = (left, right) if isinstance(left, str) else (right, left)
        if isinstance(text, str) and isinstance(times, int) and 0 <= times <= MAX_REPEAT:
            return text * times
    return _UNKNOWN


def _filter(name: str, base: Any, args: list[Any]) -> Any:
    if base is _UNKNOWN or any(a is _UNKNOWN for a in args):
        return _UNKNOWN
    if name == "join" and isinstance(base, list):
        sep = args[0] if args and isinstance(args[0], str) else ""
        return sep.join(str(b) for b in base)
    if name == "replace" and isinstance(base, str) and len(args) >= 2 \
            and all(isinstance(a, str) for a in args[:2]):
        return base.replace(args[0], args[1])
    if name == "format" and isinstance(base, str):
        try:
            return base % tuple(args) if args else base
        except (TypeError, ValueError, OverflowError):
            return _UNKNOWN
    if isinstance(base, (str, list)) and name in ("reverse", "first", "last"):
        if not base:
            return _UNKNOWN
        return base[::-1] if name == "reverse" else base[0] if name == "first" else base[-1]
    if isinstance(base, str):
        folded = {"string": base, "lower": base.lower(), "upper": base.upper(), "trim": base.strip()}
        return folded.get(name, _UNKNOWN)
    return _UNKNOWN
