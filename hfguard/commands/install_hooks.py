"""`hfguard install-hooks`: a plain git pre-commit hook for teams without the framework."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hfguard.commands.common import (
    EXIT_ERROR,
)
from hfguard.report.escape import safe


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
        click.echo(f"hfguard: {safe(exc)}", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(safe(f"hfguard: {'removed' if uninstall else 'installed'} {path}"))
