"""`hfguard env`: the model loaders installed here and the advisories that affect them."""

from __future__ import annotations

import json
import sys

import click

from hfguard.commands.common import EXIT_FAIL, EXIT_PASS


@click.command("env")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def env(fmt: str) -> None:
    """List the local model loaders (torch, transformers, keras ...) and their known advisories.

    Exit 1 when an installed loader is affected by an advisory in signatures/loader_advisories.yaml.
    Nothing is imported: versions come from package metadata."""
    from hfguard.static.loaders import exposure

    installed = exposure()
    exposed = [i for i in installed if i.advisories]
    if fmt == "json":
        click.echo(json.dumps({
            "python": sys.version.split()[0],
            "loaders": [{"package": i.package, "version": i.version,
                         "advisories": [{"id": a.id, "ghsa": a.ghsa or None, "fixed": a.fixed,
                                         "summary": a.summary} for a in i.advisories]}
                        for i in installed]}, indent=2))
    else:
        click.echo(f"python {sys.version.split()[0]}")
        for i in installed:
            mark = f"  {len(i.advisories)} advisories" if i.advisories else ""
            click.echo(f"{i.package:24} {i.version:14}{mark}")
            for a in i.advisories:
                click.echo(f"    {a.reference}: {a.summary} (fixed in {a.fixed})")
        click.echo(f"{len(installed)} loaders installed, {len(exposed)} affected by known advisories")
    sys.exit(EXIT_FAIL if exposed else EXIT_PASS)
