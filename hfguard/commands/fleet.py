"""`hfguard fleet SOURCE`: vet many Hub repos as one job on Ray (embedded locally by default)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hfguard.commands.common import EXIT_ERROR, exit_code, policy_options, scan_options
from hfguard.policy import Policy


@click.command("fleet")
@click.argument("source", required=False, type=click.Path(dir_okay=False))
@click.option("--org", help="Vet every model the Hub lists for this organisation.")
@click.option("--cache", "from_cache", is_flag=True, help="Vet every snapshot in the local HF cache.")
@click.option("--lock", "lock_path", type=click.Path(exists=True, dir_okay=False),
              help="Vet every model pinned in this hfguard.lock.")
@click.option("--output", "-o", "output_dir", type=click.Path(file_okay=False), default="hfguard-fleet",
              show_default=True, help="Folder for results.jsonl (one report per repo) and summary.json.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text",
              show_default=True, help="Summary on stdout: a table, summary.json, or an HTML page.")
@click.option("--ray-address", default=None, help="Join this Ray cluster instead of starting Ray locally.")
@click.option("--num-cpus", type=int, default=None, help="CPUs for local Ray (default: all).")
@click.option("--refresh", is_flag=True, help="Vet again repos already recorded under the same stamp.")
@click.option("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")
@policy_options
def fleet(source: str | None, org: str | None, from_cache: bool, lock_path: str | None, output_dir: str,
          fmt: str, ray_address: str | None, num_cpus: int | None, refresh: bool, token: str | None,
          policy: Policy, budget: float, quiet: bool) -> None:
    """Vet many repos: SOURCE is a file of org/name[@rev] lines (or use --org, --cache, --lock).

    Resumable: a rerun skips repos already recorded under the same policy, tiers and signatures.
    Exit code as for `check`, over the whole fleet (the worst verdict)."""
    from hfguard.fleet import sources
    from hfguard.fleet.run import run_fleet

    chosen = [x for x in (source, org, from_cache or None, lock_path) if x]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of SOURCE, --org, --cache or --lock")
    try:
        if source:
            specs = sources.from_file(Path(source))
        elif org:
            specs = sources.from_org(org, token=token)
        elif from_cache:
            specs = sources.from_cache()
        else:
            specs = sources.from_lock(Path(lock_path or ""))
    except sources.SourceError as exc:
        raise click.UsageError(str(exc)) from None
    if not specs:
        click.echo("hfguard fleet: no repos to vet", err=True)
        sys.exit(EXIT_ERROR)
    with _progress_bar(quiet, len(specs)) as on_event:
        result = run_fleet(specs, policy, Path(output_dir), options=scan_options(), token=token,
                           ray_address=ray_address, num_cpus=num_cpus, refresh=refresh,
                           budget_seconds=budget, progress=on_event)
    _print_summary(result.summary, Path(output_dir), fmt)
    sys.exit(exit_code(result.verdict, policy))


class _progress_bar:  # noqa: N801 - used as a context manager, reads like one
    """A rich progress bar on stderr: done/total, rate, ETA and verdict counts."""

    def __init__(self, quiet: bool, total: int) -> None:
        self.quiet, self.total = quiet, total

    def __enter__(self) -> Any:
        if self.quiet:
            return lambda event: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("hfguard fleet"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                            TextColumn("{task.fields[verdicts]}"), console=Console(stderr=True))
        self.task = self.bar.add_task("fleet", total=self.total, rate="", verdicts="")
        self.bar.start()
        return self.update

    def update(self, event: dict[str, Any]) -> None:
        verdicts = " ".join(f"{k} {v}" for k, v in sorted(event.get("verdicts", {}).items()))
        elapsed = self.bar.tasks[0].elapsed or 0.0
        rate = f"{event['done'] / elapsed * 60:.0f} repos/min" if elapsed > 1 and event["done"] else ""
        self.bar.update(self.task, completed=event["done"], verdicts=verdicts, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self.bar.stop()


def _print_summary(summary: dict[str, Any], folder: Path, fmt: str) -> None:
    import json

    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
        return
    if fmt == "html":
        from hfguard.report.fleet_html import render_fleet

        click.echo(render_fleet(folder))
        return
    verdicts = ", ".join(f"{v} {k}" for k, v in summary["verdicts"].items())
    click.echo(f"hfguard fleet: {summary['vetted']}/{summary['repos']} repos vetted ({verdicts}) in "
               f"{summary['seconds']} s; {summary['skipped']} already recorded; results in {folder}")
    for rule, n in list(summary["rules"].items())[:10]:
        click.echo(f"  {n:5} {rule}")
