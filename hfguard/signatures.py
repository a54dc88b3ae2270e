"""Declarative rules in `signatures/` (YAML). Each file carries a `version`; together they version
the rule set, which is part of every cache key and lockfile entry.

Checks read their own files by name: `load("pickle_globals")` -> the parsed document.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import yaml

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
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SignatureError(f"cannot read signatures {path}: {exc}") from None
    if not isinstance(doc, dict) or "version" not in doc:
        raise SignatureError(f"{path}: a signature file is a mapping with a 'version'")
    return doc


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
