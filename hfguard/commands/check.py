"""`hfguard check org/model[@revision]`: the command; the work is in hfguard.hub.check."""

from __future__ import annotations

import click

from hfguard.commands.common import echo_error, emit, progress_printer, report_options, scan_options
from hfguard.policy import Policy


@click.command("check")
@click.argument("ref", metavar="ORG/MODEL[@REVISION]")
@click.option("--no-cache", is_flag=True, help="Ignore and do not update the verdict cache.")
@click.option("--download", is_flag=True,
              help="Download every file in full into the HF cache and verify it against the Hub's "
                   "sha256 (by default the static tier reads only headers by HTTP Range).")
@click.option("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")
@click.option("--deadline", type=float, default=None,
              help="Seconds all Hub traffic of this check may take, retries and Retry-After waits "
                   "included; past it the check ends with ERROR (hub/timeout). Default: "
                   "HFGUARD_HUB_DEADLINE, else 60 (900 with --download), plus 1 s per 10 MB the "
                   "check downloads (--download, --tier weights/behavior, a Hub --base); 0: no deadline.")
@report_options
def check(ref: str, policy: Policy, fmt: str, output: str | None, budget: float, quiet: bool,
          no_cache: bool, download: bool, token: str | None, deadline: float | None) -> None:
    """Vet a Hub model pinned to a commit (branch/tag/sha; default main)."""
    from hfguard.hub.check import check_repo

    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()

    report = check_repo(ref, policy, use_cache=not no_cache, download=download, token=token,
                        options=scan_options(), progress=progress_printer(quiet), budget_seconds=budget,
                        deadline_seconds=deadline)
    # missing evidence is said on stderr whatever the verdict (a look-alike BLOCKs a Hub that is down)
    for f in report.all_findings():
        if f.error:
            echo_error(f.message)
    emit(report, policy, fmt, output)
