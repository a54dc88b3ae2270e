"""`hfguard hook refs|files|staged`: the entry points of pre-commit and the plain git hook."""

from __future__ import annotations

import click

from hfguard.commands.common import (
    emit,
    lockfile_option,
    open_lock,
    progress_printer,
    report_options,
    scan_options,
    usage_error,
)
from hfguard.policy import Policy


@click.group("hook")
def hook() -> None:
    """Entry points for pre-commit (see .pre-commit-hooks.yaml) and the plain git hook."""


@hook.command("refs")
@click.argument("files", nargs=-1, type=click.Path())
@lockfile_option
@click.option("--update-lock", is_flag=True,
              help="Record the verdicts of models vetted on the Hub in the lockfile.")
@report_options
def hook_refs(files: tuple[str, ...], lockfile: str | None, update_lock: bool, policy: Policy,
              fmt: str, output: str | None, budget: float, quiet: bool) -> None:
    """Vet the Hub models that FILES reference (Python, notebooks, YAML/JSON/TOML configs)."""
    from hfguard.hooks.precommit import refs_hook

    report = refs_hook(files, policy, open_lock(lockfile), update_lock=update_lock,
                       options=scan_options(), progress=progress_printer(quiet))
    emit(report, policy, fmt, output)


@hook.command("files")
@click.argument("files", nargs=-1, type=click.Path())
@report_options
def hook_files(files: tuple[str, ...], policy: Policy, fmt: str, output: str | None, budget: float,
               quiet: bool) -> None:
    """Scan the model files among FILES (by content, whatever their name; or by a model extension)."""
    from hfguard.hooks.precommit import files_hook

    report = files_hook(files, policy, budget_seconds=budget, options=scan_options(),
                        progress=progress_printer(quiet))
    emit(report, policy, fmt, output)


@hook.command("staged")
@lockfile_option
@report_options
def hook_staged(lockfile: str | None, policy: Policy, fmt: str, output: str | None, budget: float,
                quiet: bool) -> None:
    """Both hooks on the files staged in git's index (what the plain git hook runs)."""
    from hfguard.hooks.staged import GitError, staged_hook

    try:
        report = staged_hook(policy, open_lock(lockfile), budget_seconds=budget,
                             options=scan_options(), progress=progress_printer(quiet))
    except GitError as exc:
        raise usage_error(exc) from None
    emit(report, policy, fmt, output)
