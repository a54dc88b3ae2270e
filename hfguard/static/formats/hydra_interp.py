"""OmegaConf interpolations in Hydra configs. hydra.utils.instantiate resolves the config before it
imports a `_target_`, so `_target_: ${names.runner}` (with `names.runner: os.system`) or
`_target_: "o${p}tem"` names whatever the interpolation makes of it: a target is judged by the
string it resolves to. Only node interpolations are resolved (absolute `${a.b}`, relative `${.b}`);
a resolver (`${oc.env:X}`) or a missing key leaves the target unresolved."""

from __future__ import annotations

import re
from typing import Any

_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
MAX_STEPS = 32  # interpolations replaced in one string (chains and several per string)
_MISSING = object()


def resolve(doc: Any, parent: tuple[Any, ...], text: str) -> str | None:
    """`text` with its node interpolations replaced, as OmegaConf would; None when any stays open.
    `parent` is the key path of the node holding the value (for relative interpolations)."""
    for _ in range(MAX_STEPS):
        found = _INTERPOLATION.search(text)
        if found is None:
            return None if "${" in text else text
        value = _lookup(doc, parent, found.group(1).strip())
        if value is _MISSING or isinstance(value, (dict, list)):
            return None
        text = text[: found.start()] + _as_text(value) + text[found.end():]
    return None


def _as_text(value: Any) -> str:
    if value is None:
        return "None"
    return str(value)


def _lookup(doc: Any, parent: tuple[Any, ...], key: str) -> Any:
    if not key or ":" in key:  # a resolver call (oc.env, oc.select ...): not a node of this file
        return _MISSING
    dots = len(key) - len(key.lstrip("."))
    base: tuple[Any, ...] = ()
    if dots:  # `.b` is a sibling, `..b` a key of the parent's parent
        up = dots - 1
        if up > len(parent):
            return _MISSING
        base, key = parent[: len(parent) - up], key[dots:]
    node = doc
    for part in (*base, *key.replace("[", ".").replace("]", "").split(".")):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, (int, str)) and str(part).isdigit() \
                and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node
