"""`hfguard scan PATH...`: local files, directories, or the local HF cache."""

from __future__ import annotations

import click

from hfguard.commands.common import (
    emit,
    progress_printer,
    report_options,
    scan_options,
    usage_error,
)
from hfguard.policy import Policy


@click.command("scan")
@click.argument("paths", nargs=-1, type=click.Path())
@report_options
def scan(paths: tuple[str, ...], policy: Policy, fmt: str, output: str | None, budget: float,
         quiet: bool) -> None:
    """Scan local files and directories (recursively); with no PATH, the local HF cache."""
    from hfguard.checks import checks_for_tiers
    from hfguard.engine import scan as run_scan
    from hfguard.target import cache_target, local_target

    try:
        target = local_target(list(paths)) if paths else cache_target()
    except FileNotFoundError as exc:
        raise usage_error(exc) from None
    progress = progress_printer(quiet)
    if not target.files:
        progress(f"nothing to scan in {target.name}")
    report = run_scan(target, policy, checks_for_tiers(policy.tiers), progress=progress,
                      budget_seconds=budget, options=scan_options())
    emit(report, policy, fmt, output)
