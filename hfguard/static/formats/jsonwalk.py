"""Every object of a parsed JSON document, walked iteratively (no recursion limit to hit) and
bounded: schemas and configs that loaders walk (skops schema.json, NeMo 2 io.json) are read
the same way, depth first, with their JSON paths."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hfguard.budget import Budget

MAX_NODES = 2_000_000


def json_objects(doc: Any, what: str, budget: Budget | None = None,
                 max_nodes: int = MAX_NODES) -> Iterator[tuple[str, dict[str, Any]]]:
    """(JSON path such as `$.steps[0].estimator`, object) of every object in `doc`; ValueError
    past `max_nodes` nodes, the budget checked every 4096."""
    stack: list[tuple[Any, str]] = [(doc, "$")]
    nodes = 0
    while stack:
        node, path = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise ValueError(f"{what} has more than {max_nodes} nodes")
        if budget is not None and nodes % 4096 == 0:
            budget.tick(f"walking a {what}")
        if isinstance(node, dict):
            yield path, node
            stack += [(v, f"{path}.{k}") for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, f"{path}[{i}]") for i, v in enumerate(node)]
