"""`hfguard lock [--check]`: pin every referenced model's sha and verdict in hfguard.lock."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

import click

from hfguard.commands.common import (
    EXIT_FAIL,
    EXIT_PASS,
    emit,
    lockfile_option,
    open_lock,
    progress_printer,
    report_options,
    scan_options,
)
from hfguard.policy import Policy
from hfguard.report.escape import safe


@click.command("lock")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@lockfile_option
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
    lk = open_lock(lockfile)
    result = lock_references(files, policy, lk, check=check, refresh=refresh, prune=not paths,
                             options=scan_options(), progress=progress)
    if check:
        for ref in result.stale:
            click.echo(safe(f"{ref.file}:{ref.line}: {ref.spec} has no current entry in {lk.path}"), err=True)
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
