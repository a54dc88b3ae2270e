"""What every command shares: report options resolved into a Policy, progress on stderr, the
report on stdout (or --output) and the exit code its verdict calls for.

Exit codes: 0 pass, 1 the verdict reached --fail-on (flag by default), 2 error or usage error.
"""

from __future__ import annotations

import functools
import io
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hfguard.checks import load_checked_policy
from hfguard.findings import Report, Verdict
from hfguard.policy import TIERS, Policy, PolicyError, parse_fail_on
from hfguard.report import FORMATS, write_report
from hfguard.report.escape import safe

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--format and --output: where one report goes."""
    func = click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
                        help="Write the report to this file instead of stdout.")(func)
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
                        help="Report format on stdout (or --output).")(func)


def policy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every vetting command shares, resolved into a Policy (plus --budget and --quiet)."""

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
            policy = load_checked_policy(Path(kw.pop("policy_path")) if kw.get("policy_path") else None)
        except PolicyError as exc:
            raise usage_error(exc) from None
        kw.pop("policy_path", None)
        fail_on = kw.pop("fail_on")
        if fail_on:
            policy.fail_on = parse_fail_on(fail_on)
        tiers = kw.pop("tiers")
        if tiers:
            policy.tiers = tuple(dict.fromkeys(tiers))
        return func(policy=policy, **kw)

    return wrapper


def report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every scanning command shares: the policy options and where the report goes."""
    return output_options(policy_options(func))


def scan_options() -> dict[str, Any]:
    """The deeper-tier settings of the running command (--base, --device, --reference,
    --probe-data), for ScanContext.options. They travel in the click context so that commands
    which do not use them keep their signatures."""
    return dict(click.get_current_context().meta.get("hfguard.options", {}))


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """Progress on stderr: one line rewritten in place on a terminal, a line per step in logs.
    Messages name files and models: escaped, so a name cannot forge a line or move the cursor."""
    if quiet:
        return lambda msg: None
    if sys.stderr.isatty():
        width = max(20, shutil.get_terminal_size().columns - 1)
        return lambda msg: click.echo(f"\r\x1b[Khfguard: {safe(msg)}"[: width + 4], err=True, nl=False)
    return lambda msg: click.echo(f"hfguard: {safe(msg)}", err=True)


def echo_error(message: object) -> None:
    """`hfguard: error: ...` on stderr; the message may quote untrusted data (escaped)."""
    click.echo(f"hfguard: error: {safe(message)}", err=True)


def usage_error(exc: Exception) -> click.UsageError:
    """A usage error whose text may name untrusted paths (escaped)."""
    return click.UsageError(safe(exc))


def emit(report: Report, policy: Policy, fmt: str, output: str | None) -> None:
    """Write the report and exit with the code its verdict calls for.

    A file name that is not valid UTF-8 reaches the report as lone surrogates, which a strict
    encoder refuses (HTML and SARIF keep names as they are): they are written as `\\udcff`, on
    stdout as in a file, rather than end the run without a report."""
    if sys.stderr.isatty():
        click.echo("\r\x1b[K", err=True, nl=False)  # clear the progress line
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    if output:
        with open(output, "w", encoding="utf-8", errors="backslashreplace") as fh:
            write_report(report, fmt, fh, policy)
    elif sys.stdout.isatty():
        write_report(report, fmt, sys.stdout, policy)
    else:  # a pipe or file: one write, not one per JSON token (unbuffered, PYTHONUNBUFFERED=1:
        # 22k writes of a 240 KB report cost 40 ms through a pipe)
        text = io.StringIO()
        write_report(report, fmt, text, policy)
        sys.stdout.write(text.getvalue())
    sys.exit(exit_code(report.verdict, policy))


def exit_code(verdict: Verdict, policy: Policy) -> int:
    if verdict is Verdict.ERROR:
        return EXIT_ERROR
    return EXIT_FAIL if policy.fails(verdict) else EXIT_PASS


lockfile_option = click.option(
    "--lockfile", type=click.Path(dir_okay=False), default=None,
    help="Lockfile to read/write (default: the nearest hfguard.lock, else ./hfguard.lock).")


def open_lock(path: str | None):
    from hfguard.hooks.lockfile import LockError, find_lock, load_lock

    try:
        return load_lock(Path(path) if path else find_lock())
    except LockError as exc:
        raise usage_error(exc) from None
