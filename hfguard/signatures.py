"""Declarative rules in `signatures/` (YAML). Each file carries a `version`; together they version
the rule set, which is part of every cache key and lockfile entry.

Checks read their own files by name: `load("pickle_globals")` -> the parsed document.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from hfguard.paths import cache_dir

# The repo's top-level signatures/ folder, reached through the hfguard/_signatures link so that
# a source checkout, an editable install and a wheel all find it the same way.
SIGNATURES_DIR = Path(__file__).parent / "_signatures"


class SignatureError(ValueError):
    pass


def signature_files(folder: Path = SIGNATURES_DIR) -> list[Path]:
    return sorted(folder.glob("*.yaml"))


@functools.cache
def load(name: str, folder: Path = SIGNATURES_DIR) -> dict[str, Any]:
    path = folder / f"{name}.yaml"
    doc = read_yaml(path)
    if not isinstance(doc, dict) or "version" not in doc:
        raise SignatureError(f"{path}: a signature file is a mapping with a 'version'")
    return doc


def read_yaml(path: Path) -> Any:
    """A shipped YAML file, parsed once per content (the parse is cached as JSON, never pickle)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SignatureError(f"cannot read signatures {path}: {exc}") from None
    doc = _cached(raw)
    if doc is None:
        doc = _parse(raw, path)
        _store(raw, doc)
    return doc


def _parse(raw: bytes, path: Path) -> Any:
    import yaml  # only when the parsed cache is cold (importing and parsing YAML cost ~50 ms a run)

    try:
        # libyaml's parser when PyYAML has it (10x faster than the pure-Python one)
        return yaml.load(raw.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SignatureError(f"cannot read signatures {path}: {exc}") from None


def _cache_path(raw: bytes) -> Path:
    """Parsed signatures as JSON (never pickle), keyed by the YAML file's content hash."""
    return cache_dir() / "signatures" / f"{hashlib.sha256(raw).hexdigest()[:32]}.json"


def _cached(raw: bytes) -> Any:
    try:
        return json.loads(_cache_path(raw).read_bytes())
    except (OSError, ValueError):
        return None


def _store(raw: bytes, doc: Any) -> None:
    try:
        text = json.dumps(doc)
        if json.loads(text) != doc:  # YAML types JSON cannot carry (dates, int keys): no cache
            return
        path = _cache_path(raw)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        pass  # a read-only cache only costs the parse


def signatures_version(folder: Path = SIGNATURES_DIR) -> str:
    """Content hash of the whole rule set (file names, versions and bodies), installed feed
    updates included (read each time: an update must make older verdicts stale at once)."""
    from hfguard.feeds import feed_files

    h = hashlib.sha256(_shipped_version(folder).encode())
    for path in feed_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


@functools.cache
def _shipped_version(folder: Path) -> str:
    h = hashlib.sha256()
    for path in signature_files(folder):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()
