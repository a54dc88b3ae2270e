"""CLI commands for the hooks: `hfguard hook refs|files`, `hfguard lock`, `hfguard install-hooks`.

Wired into hfguard.cli with `main.add_command(...)`; kept light (no huggingface_hub import
unless a model must actually be vetted on the Hub).
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import click

from hfguard.cli import (
    EXIT_ERROR,
    EXIT_FAIL,
    EXIT_PASS,
    emit,
    progress_printer,
    report_options,
    scan_options,
)
from hfguard.policy import Policy

_lockfile_option = click.option(
    "--lockfile", type=click.Path(dir_okay=False), default=None,
    help="Lockfile to read/write (default: the nearest hfguard.lock, else ./hfguard.lock).")


def _open_lock(path: str | None):
    from hfguard.hooks.lockfile import LockError, find_lock, load_lock

    try:
        return load_lock(Path(path) if path else find_lock())
    except LockError as exc:
        raise click.UsageError(str(exc)) from None


@click.group("hook")
def hook() -> None:
    """Entry points for pre-commit (see .pre-commit-hooks.yaml) and the plain git hook."""


@hook.command("refs")
@click.argument("files", nargs=-1, type=click.Path())
@_lockfile_option
@click.option("--update-lock", is_flag=True,
              help="Record the verdicts of models vetted on the Hub in the lockfile.")
@report_options
def hook_refs(files: tuple[str, ...], lockfile: str | None, update_lock: bool, policy: Policy,
              fmt: str, output: str | None, budget: float, quiet: bool) -> None:
    """Vet the Hub models that FILES reference (Python, notebooks, YAML/JSON/TOML configs)."""
    from hfguard.hooks.precommit import refs_hook

    report = refs_hook(files, policy, _open_lock(lockfile), update_lock=update_lock,
                       options=scan_options(), progress=progress_printer(quiet))
    emit(report, policy, fmt, output)


@hook.command("files")
@click.argument("files", nargs=-1, type=click.Path())
@report_options
def hook_files(files: tuple[str, ...], policy: Policy, fmt: str, output: str | None, budget: float,
               quiet: bool) -> None:
    """Scan the model files among FILES (by extension: .bin .pt .pkl .safetensors .onnx ...)."""
    from hfguard.hooks.precommit import files_hook

    report = files_hook(files, policy, budget_seconds=budget, options=scan_options(),
                        progress=progress_printer(quiet))
    emit(report, policy, fmt, output)


@hook.command("staged")
@_lockfile_option
@report_options
def hook_staged(lockfile: str | None, policy: Policy, fmt: str, output: str | None, budget: float,
                quiet: bool) -> None:
    """Both hooks on the files staged in git's index (what the plain git hook runs)."""
    from hfguard.hooks.staged import GitError, staged_hook

    try:
        report = staged_hook(policy, _open_lock(lockfile), budget_seconds=budget,
                             options=scan_options(), progress=progress_printer(quiet))
    except GitError as exc:
        raise click.UsageError(str(exc)) from None
    emit(report, policy, fmt, output)


@click.command("lock")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@_lockfile_option
@click.option("--check", is_flag=True,
              help="Only verify, without network, that every reference has a current entry.")
@click.option("--refresh", is_flag=True, help="Re-vet every reference, even those locked.")
@report_options
def lock(paths: tuple[str, ...], lockfile: str | None, check: bool, refresh: bool, policy: Policy,
         fmt: str, output: str | None, budget: float, quiet: bool) -> None:
    """Vet the models referenced in PATHS (default: the repository) and pin them in hfguard.lock."""
    from hfguard.hooks.locking import lock_references, repo_files

    progress = progress_printer(quiet)
    files: list[str] = []
    for p in paths or (".",):
        files += repo_files(Path(p)) if Path(p).is_dir() else [p]
    lk = _open_lock(lockfile)
    result = lock_references(files, policy, lk, check=check, refresh=refresh, prune=not paths,
                             options=scan_options(), progress=progress)
    if check:
        for ref in result.stale:
            click.echo(f"{ref.file}:{ref.line}: {ref.spec} has no current entry in {lk.path}", err=True)
        if fmt != "text" or output:  # the report too, but the exit code says stale or not
            from hfguard.report import write_report

            with open(output, "w", encoding="utf-8") if output else nullcontext(sys.stdout) as out:
                write_report(result.report, fmt, out, policy)
        click.echo(f"hfguard lock --check: {len(result.references)} references, "
                   f"{len(result.stale)} stale or missing", err=True)
        sys.exit(EXIT_FAIL if result.stale else EXIT_PASS)
    progress(f"{len(result.references)} references; {result.written} vetted and recorded, "
             f"{result.pruned} pruned, in {lk.path}")
    emit(result.report, policy, fmt, output)


@click.command("install-hooks")
@click.option("--force", is_flag=True, help="Replace a pre-commit hook that hfguard did not write "
                                            "(it is kept as pre-commit.hfguard-backup).")
@click.option("--uninstall", is_flag=True, help="Remove the hook that hfguard installed.")
def install_hooks(force: bool, uninstall: bool) -> None:
    """Install hfguard as a plain git pre-commit hook (honours core.hooksPath)."""
    from hfguard.hooks.githooks import HookError, install
    from hfguard.hooks.githooks import uninstall as remove

    try:
        path = remove(Path.cwd()) if uninstall else install(Path.cwd(), force=force)
    except HookError as exc:
        click.echo(f"hfguard: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(f"hfguard: {'removed' if uninstall else 'installed'} {path}")
