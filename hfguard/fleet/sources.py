"""Which repos a fleet vets: a file of `org/name[@rev]` lines, an organisation's Hub listing, the
local HF cache, or an hfguard.lock."""

from __future__ import annotations

import re
from pathlib import Path

_SPEC = re.compile(r"^(hf-hub:)?[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class SourceError(ValueError):
    """A fleet source that cannot be read or holds something that is not a repo id."""


def from_file(path: Path) -> list[str]:
    """One `org/name[@rev]` per line; blank lines and `#` comments ignored; duplicates dropped."""
    specs: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    for lineno, line in enumerate(lines, 1):
        spec = line.split("#", 1)[0].strip()
        if not spec:
            continue
        if not _SPEC.match(spec):
            raise SourceError(f"{path}:{lineno}: {spec!r} is not org/name[@revision]")
        specs.append(spec.removeprefix("hf-hub:"))
    return list(dict.fromkeys(specs))


def from_org(org: str, limit: int | None = None, token: str | None = None) -> list[str]:
    """Every model the Hub lists for `org` (newest API listing; pagination followed)."""
    from huggingface_hub import HfApi

    return [m.id for m in HfApi(token=token).list_models(author=org, limit=limit)]


def from_cache(cache: Path | None = None) -> list[str]:
    """Every snapshot in the local HF cache, pinned to its commit sha."""
    from hfguard.target import hf_cache_dir

    root = cache or hf_cache_dir()
    specs = []
    for repo_dir in sorted(root.glob("models--*")):
        repo = repo_dir.name.removeprefix("models--").replace("--", "/", 1)
        for snap in sorted((repo_dir / "snapshots").glob("*")):
            specs.append(f"{repo}@{snap.name}")
    return specs


def from_lock(path: Path) -> list[str]:
    """Every model pinned in an hfguard.lock, at the sha it was locked to."""
    from hfguard.hooks.lockfile import LockError, load_lock

    try:
        lock = load_lock(path)
    except LockError as exc:
        raise SourceError(str(exc)) from None
    return list(dict.fromkeys(f"{e.repo}@{e.revision}" for e in lock.entries.values()))
