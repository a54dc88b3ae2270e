"""`hfguard checks`: the registered checks, built-in and plugins."""

from __future__ import annotations

import click


@click.command("checks")
def list_checks() -> None:
    """List the registered checks (built-in and plugins)."""
    from hfguard.checks import available_checks

    for c in available_checks():
        click.echo(f"{c.id:28} {c.tier:9} v{c.version:5} {c.description}")
