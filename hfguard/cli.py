"""The `hfguard` command. Reports go to stdout (or --output); progress and logs go to stderr.

Exit codes: 0 pass, 1 the verdict reached --fail-on (flag by default), 2 error or usage error.
"""

from __future__ import annotations

import functools
import importlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hfguard import __version__
from hfguard.findings import Report, Verdict
from hfguard.policy import TIERS, Policy, PolicyError, load_policy, parse_fail_on
from hfguard.report import FORMATS, write_report

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every scanning command shares, resolved into a Policy and output settings."""

    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
                  help="Report format on stdout (or --output).")
    @click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
                  help="Write the report to this file instead of stdout.")
    @click.option("--fail-on", type=click.Choice(["flag", "block", "error", "never"]),
                  help="Exit 1 at this verdict or worse (default from policy: flag).")
    @click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False),
                  help="Policy file (hfguard.toml or pyproject.toml); default: nearest one.")
    @click.option("--tier", "tiers", multiple=True, type=click.Choice(TIERS),
                  help="Evidence tiers to run (repeatable); default from policy: static.")
    @click.option("--budget", type=float, default=60.0, show_default=True,
                  help="Seconds one check may spend on one file before it gives up (ERROR).")
    @click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
    @click.option("--base", help="Base model (path or org/name[@rev]) for the weights-tier diff; "
                  "default: the card's base_model.")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                  help="Where the weights and behavior tiers compute (cuda needs torch).")
    @click.option("--reference", help="Behavior tier: a trusted reference model (folder or org/name@rev).")
    @click.option("--probe-data", type=click.Path(exists=True, dir_okay=False),
                  help="Behavior tier: probe/canary texts, one per line.")
    @functools.wraps(func)
    def wrapper(**kw: Any) -> Any:
        click.get_current_context().meta["hfguard.options"] = {
            k: v for k in ("base", "device", "reference", "probe_data") if (v := kw.pop(k)) is not None}
        try:
            policy = load_policy(Path(kw.pop("policy_path")) if kw.get("policy_path") else None)
        except PolicyError as exc:
            raise click.UsageError(str(exc)) from None
        kw.pop("policy_path", None)
        fail_on = kw.pop("fail_on")
        if fail_on:
            policy.fail_on = parse_fail_on(fail_on)
        tiers = kw.pop("tiers")
        if tiers:
            policy.tiers = tuple(dict.fromkeys(tiers))
        return func(policy=policy, **kw)

    return wrapper


def scan_options() -> dict[str, Any]:
    """The deeper-tier settings of the running command (--base, --device, --reference,
    --probe-data), for ScanContext.options. They travel in the click context so that commands
    which do not use them keep their signatures."""
    return dict(click.get_current_context().meta.get("hfguard.options", {}))


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """Progress on stderr: one line rewritten in place on a terminal, a line per step in logs."""
    if quiet:
        return lambda msg: None
    if sys.stderr.isatty():
        width = max(20, shutil.get_terminal_size().columns - 1)
        return lambda msg: click.echo(f"\r\x1b[Khfguard: {msg}"[: width + 4], err=True, nl=False)
    return lambda msg: click.echo(f"hfguard: {msg}", err=True)


def emit(report: Report, policy: Policy, fmt: str, output: str | None) -> None:
    """Write the report and exit with the code its verdict calls for."""
    if sys.stderr.isatty():
        click.echo("\r\x1b[K", err=True, nl=False)  # clear the progress line
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            write_report(report, fmt, fh, policy)
    else:
        write_report(report, fmt, sys.stdout, policy)
    sys.exit(exit_code(report.verdict, policy))


def exit_code(verdict: Verdict, policy: Policy) -> int:
    if verdict is Verdict.ERROR:
        return EXIT_ERROR
    return EXIT_FAIL if policy.fails(verdict) else EXIT_PASS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hfguard")
def main() -> None:
    """Vet pre-trained models before anything loads them: PASS, FLAG or BLOCK — and why."""


@main.command()
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
        raise click.UsageError(str(exc)) from None
    progress = progress_printer(quiet)
    if not target.files:
        progress(f"nothing to scan in {target.name}")
    report = run_scan(target, policy, checks_for_tiers(policy.tiers), progress=progress,
                      budget_seconds=budget, options=scan_options())
    emit(report, policy, fmt, output)


@main.command("checks")
def list_checks() -> None:
    """List the registered checks (built-in and plugins)."""
    from hfguard.checks import available_checks

    for c in available_checks():
        click.echo(f"{c.id:28} {c.tier:9} v{c.version:5} {c.description}")


main.add_command(importlib.import_module("hfguard.hub.cli").check)
_hooks = importlib.import_module("hfguard.hooks.commands")  # hook entry points, lock, git hooks
main.add_command(_hooks.hook)
main.add_command(_hooks.lock)
main.add_command(_hooks.install_hooks)


def run() -> None:
    """Console entry point: an unexpected failure is exit 2 with a message, never a pass."""
    try:
        main(standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001
        click.echo(f"hfguard: error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    run()
