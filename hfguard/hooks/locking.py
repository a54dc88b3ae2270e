"""`hfguard lock`: record a verdict for every model the repository references, or check the lock."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hfguard.findings import Report
from hfguard.hooks.lockfile import Lockfile, current_stamp
from hfguard.hooks.precommit import vet_references
from hfguard.hooks.refs import SUPPORTED_SUFFIXES, Reference, extract
from hfguard.hooks.vet import Vet
from hfguard.policy import Policy


def _maybe_source(name: str) -> bool:
    """By suffix; a name without one may be a Python script (`bin/train`): extract reads its shebang."""
    return name.lower().endswith(SUPPORTED_SUFFIXES) or "." not in os.path.basename(name)

_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".mypy_cache",
              ".pytest_cache", ".ruff_cache", "build", "dist", "site-packages"}


def repo_files(root: Path) -> list[str]:
    """Files to look for references in: git's tracked and untracked-but-not-ignored files when
    `root` is in a git work tree, else a walk that skips virtualenvs and caches."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, check=True, timeout=60).stdout
        names = [n for n in out.decode("utf-8", "surrogateescape").split("\0") if n]
        return sorted(str(root / n) if root != Path(".") else n for n in names if _maybe_source(n))
    except (OSError, subprocess.SubprocessError):
        pass
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        found += [os.path.normpath(os.path.join(dirpath, n)) for n in sorted(filenames) if _maybe_source(n)]
    return found


@dataclass
class LockResult:
    report: Report
    references: list[Reference]
    stale: list[Reference]      # references that had no current entry before this run
    written: int                # entries vetted and recorded
    pruned: int


def lock_references(paths: list[str], policy: Policy, lock: Lockfile, *, check: bool = False,
                    refresh: bool = False, prune: bool = False, vet: Vet | None = None,
                    options: dict | None = None,
                    progress: Callable[[str], None] = lambda msg: None) -> LockResult:
    """Vet every reference without a current entry and record it (`check`: network-free, only
    report what is stale). `prune` drops entries no reference uses any more."""
    got = extract(paths)
    refs = got.references
    stamp = current_stamp(policy, options)
    if refresh and not check:
        lock = Lockfile(path=lock.path, entries={})  # re-vet everything; old entries dropped below
    # a file too large to read is the hooks' ERROR (they gate what is committed); here, over every
    # file of the repository (large data files included), it is reported and the rest is locked
    problems = got.problems + [(file, 1, why) for file, why in got.unread]
    result = vet_references(refs, policy, lock, stamp=stamp, offline=check, vet=vet, options=options,
                            progress=progress, problems=problems, files=got.files,
                            failures=got.failures)
    written = 0
    pruned = 0
    if not check:
        for entry in result.vetted:
            lock.put(entry)
            written += 1
        if prune:
            used = {(r.repo_id.lower(), r.revision or "") for r in refs}
            for key in [k for k in lock.entries if k not in used]:
                del lock.entries[key]
                pruned += 1
        lock.save()
    return LockResult(report=result.report, references=refs, stale=result.stale, written=written,
                      pruned=pruned)
