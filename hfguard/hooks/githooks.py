"""`hfguard install-hooks`: the plain git pre-commit hook, for teams without the pre-commit framework.

The script is `hooks/pre-commit` at the top of the hfguard repository (shipped in the package
through the `_githooks` link). It goes where git looks for hooks: `core.hooksPath` when set
(relative to the work tree's top), else the repository's hooks folder (shared by worktrees).
A hook that hfguard did not write is never replaced without `force` (it is then backed up).
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parent / "_githooks" / "pre-commit"
MARKER = "hfguard-managed git hook"
BACKUP_SUFFIX = ".hfguard-backup"


class HookError(RuntimeError):
    pass


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise HookError(f"cannot run git: {exc}") from None
    if out.returncode != 0:
        raise HookError(out.stderr.strip() or f"git {' '.join(args)} failed")
    return out.stdout.strip()


def hooks_dir(root: Path) -> Path:
    """Where git runs hooks from for the repository at `root`."""
    top = Path(_git(root, "rev-parse", "--show-toplevel"))
    try:
        configured = _git(root, "config", "--get", "core.hooksPath")
    except HookError:
        configured = ""
    if configured:
        path = Path(os.path.expanduser(configured))
        return path if path.is_absolute() else top / path
    common = Path(_git(root, "rev-parse", "--git-common-dir"))
    return (common if common.is_absolute() else (root / common)).resolve() / "hooks"


def install(root: Path, *, force: bool = False) -> Path:
    target = hooks_dir(root) / "pre-commit"
    body = SCRIPT.read_text(encoding="utf-8")
    if target.exists() or target.is_symlink():
        try:
            existing = target.read_text(encoding="utf-8", errors="replace")
        except OSError:
            existing = ""
        if MARKER not in existing:
            if not force:
                raise HookError(f"{target} exists and was not written by hfguard; "
                                "use --force to replace it (it will be kept as "
                                f"pre-commit{BACKUP_SUFFIX})")
            target.replace(target.with_name(target.name + BACKUP_SUFFIX))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def uninstall(root: Path) -> Path:
    target = hooks_dir(root) / "pre-commit"
    if not target.exists():
        raise HookError(f"no hook at {target}")
    if MARKER not in target.read_text(encoding="utf-8", errors="replace"):
        raise HookError(f"{target} was not written by hfguard; leaving it alone")
    target.unlink()
    backup = target.with_name(target.name + BACKUP_SUFFIX)
    if backup.exists():
        backup.replace(target)
    return target
