"""Model card metadata: the Hub's card data, or a local folder's README.md front matter."""

from __future__ import annotations

from typing import Any

from hfguard.target import Target

MAX_README_BYTES = 1 << 20


def card_metadata(target: Target) -> dict[str, Any]:
    """Never raises: an unreadable card is no card (the checks report unreadable files)."""
    if target.card or target.source == "hub":   # the Hub parses its cards; no README read over HTTP
        return target.card
    readmes = [f for f in target.files if f.name.lower() == "readme.md" and f.size <= MAX_README_BYTES]
    if not readmes:
        return {}
    top = min(readmes, key=lambda f: f.path.count("/"))   # the folder's own card, not a sub-model's
    try:
        with top.open() as fh:
            return front_matter(fh.read(MAX_README_BYTES).decode("utf-8", "replace"))
    except OSError:
        return {}


def front_matter(text: str) -> dict[str, Any]:
    import yaml

    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        doc = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def declared_bases(card: dict[str, Any]) -> list[str]:
    """`base_model` as a list of ids (a merge names several), without the `hf-hub:` prefix."""
    base = card.get("base_model")
    bases = base if isinstance(base, list) else [base]
    return [b.strip().removeprefix("hf-hub:") for b in bases if isinstance(b, str) and b.strip()]
