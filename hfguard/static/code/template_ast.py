"""Names a Jinja chat template builds, read from its syntax tree (jinja2's parser; nothing is
rendered). SSTI payloads hide the dunder names the text scan looks for: escapes
(`'\\x5f\\x5fglobals\\x5f\\x5f'`, decoded by the lexer), concatenation (`'__in' ~ 'it__'`, `'_'*2`),
`join` of pieces, a `set` variable holding a piece. Each string expression is folded to its value
where the template alone decides it (bounded); a subscript whose key is built at render time from
strings is reported as such. Without jinja2 (an optional dependency) this returns nothing and the
text scan stands alone."""

from __future__ import annotations

from typing import Any

MAX_TEXT = 4096      # longest folded string
MAX_REPEAT = 64      # 'x' * n folded only up to this n
MAX_NODES = 200_000  # syntax-tree nodes walked
_BUILDERS = {"join", "format", "replace", "reverse", "string", "lower", "upper", "trim", "first", "last"}
# callables a renderer puts in scope (Jinja's globals, transformers' helpers): an attribute or item of
# the global itself is only ever a way into Python (`cycler.__init__`, `lipsum[...]`)
_GLOBAL_CALLABLES = {"cycler", "joiner", "namespace", "lipsum", "range", "dict", "self", "raise_exception",
                     "strftime_now", "config", "request", "url_for", "get_flashed_messages"}
_UNKNOWN = object()


def built_strings(template: str) -> tuple[list[str], list[str]] | None:
    """(every string the template's expressions fold to, gadget shapes: subscripts keyed by render-time
    string building, items or attributes of a global callable); None when jinja2 is missing or the
    text is not a template jinja2 can parse."""
    try:
        from jinja2 import Environment, nodes
        from jinja2.exceptions import TemplateError
    except ImportError:
        return None
    try:  # parse only, never compiled or rendered; with the tags transformers' renderer knows
        tree = Environment(extensions=["jinja2.ext.loopcontrols", _generation_tag()]).parse(template)
    except (TemplateError, RecursionError, MemoryError, ValueError):
        return None
    env: dict[str, Any] = {}
    strings: list[str] = []
    built_keys: list[str] = []
    for count, node in enumerate(tree.find_all(nodes.Expr)):
        if count > MAX_NODES:
            break
        if isinstance(node, nodes.Const):
            if isinstance(node.value, str):
                strings.append(node.value)
            continue
        value = _fold(node, env, nodes)
        if isinstance(value, str):
            strings.append(value)
        if isinstance(node, nodes.Getitem) and _fold(node.arg, env, nodes) is _UNKNOWN \
                and _builds_string(node.arg, nodes):
            built_keys.append(f"subscript keyed by {type(node.arg).__name__}")
        if isinstance(node, (nodes.Getitem, nodes.Getattr)) and isinstance(node.node, nodes.Name) \
                and node.node.name in _GLOBAL_CALLABLES:
            kind = "item" if isinstance(node, nodes.Getitem) else "attribute"
            built_keys.append(f"{kind} of {node.node.name}")
    for assign in tree.find_all(nodes.Assign):  # `set` variables, then their uses fold again
        if isinstance(assign.target, nodes.Name):
            env[assign.target.name] = _fold(assign.node, env, nodes)
    if env:
        for node in tree.find_all((nodes.Getitem, nodes.Concat, nodes.Add, nodes.Filter)):
            target = node.arg if isinstance(node, nodes.Getitem) else node
            value = _fold(target, env, nodes)
            if isinstance(value, str):
                strings.append(value)
    return strings, built_keys


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


def _builds_string(node: Any, nodes: Any) -> bool:
    """A key made at render time by joining strings: `~`, `+` with a string, a string filter."""
    if isinstance(node, nodes.Concat):
        return True
    if isinstance(node, nodes.Add):
        return _str_const(node.left, nodes) or _str_const(node.right, nodes) \
            or _builds_string(node.left, nodes) or _builds_string(node.right, nodes)
    if isinstance(node, nodes.Mul):
        return _str_const(node.left, nodes) or _str_const(node.right, nodes)
    return isinstance(node, nodes.Filter) and node.name in _BUILDERS


def _str_const(node: Any, nodes: Any) -> bool:
    return isinstance(node, nodes.Const) and isinstance(node.value, str)


def _fold(node: Any, env: dict[str, Any], nodes: Any, depth: int = 0) -> Any:
    """The value of a string expression when the template alone decides it, else _UNKNOWN."""
    if depth > 64:
        return _UNKNOWN
    value: Any = _UNKNOWN
    if isinstance(node, nodes.Const) and isinstance(node.value, (str, int)) \
            and not isinstance(node.value, bool):
        value = node.value
    elif isinstance(node, nodes.Name):
        value = env.get(node.name, _UNKNOWN)
    elif isinstance(node, (nodes.List, nodes.Tuple)):
        items = [_fold(n, env, nodes, depth + 1) for n in node.items]
        value = _UNKNOWN if any(i is _UNKNOWN for i in items) else items
    elif isinstance(node, nodes.Concat):
        parts = [_fold(n, env, nodes, depth + 1) for n in node.nodes]
        value = _UNKNOWN if any(p is _UNKNOWN or isinstance(p, list) for p in parts) \
            else "".join(str(p) for p in parts)
    elif isinstance(node, (nodes.Add, nodes.Mul)):
        left, right = _fold(node.left, env, nodes, depth + 1), _fold(node.right, env, nodes, depth + 1)
        value = _arith(type(node).__name__, left, right)
    elif isinstance(node, nodes.Filter) and node.name in _BUILDERS and node.node is not None:
        value = _filter(node, _fold(node.node, env, nodes, depth + 1), env, nodes, depth)
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


def _filter(node: Any, base: Any, env: dict[str, Any], nodes: Any, depth: int) -> Any:
    if base is _UNKNOWN:
        return _UNKNOWN
    args = [_fold(a, env, nodes, depth + 1) for a in node.args]
    if any(a is _UNKNOWN for a in args):
        return _UNKNOWN
    name = node.name
    if name == "join" and isinstance(base, list):
        sep = args[0] if args and isinstance(args[0], str) else ""
        return sep.join(str(b) for b in base)
    if name == "replace" and isinstance(base, str) and len(args) >= 2 \
            and all(isinstance(a, str) for a in args[:2]):
        return base.replace(args[0], args[1])
    if name == "format" and isinstance(base, str):
        try:
            return base % tuple(args) if args else base
        except (TypeError, ValueError):
            return _UNKNOWN
    if isinstance(base, (str, list)) and name in ("reverse", "first", "last"):
        if not base:
            return _UNKNOWN
        return base[::-1] if name == "reverse" else base[0] if name == "first" else base[-1]
    if isinstance(base, str):
        folded = {"string": base, "lower": base.lower(), "upper": base.upper(), "trim": base.strip()}
        return folded.get(name, _UNKNOWN)
    return _UNKNOWN
