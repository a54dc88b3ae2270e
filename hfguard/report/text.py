"""Human report for the terminal (rich). Verdict first, then the reasons, worst first.

Everything taken from the scanned data goes through `escape.safe` into `rich.text.Text` objects:
data is never parsed as rich markup (a name like `x[/bold]` is text, not a closing tag).
"""

from __future__ import annotations

from typing import TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hfguard.findings import Finding, Report, Verdict
from hfguard.policy import Policy
from hfguard.report.escape import safe

_VERDICT_STYLE = {Verdict.PASS: "bold green", Verdict.FLAG: "bold yellow",
                  Verdict.ERROR: "bold magenta", Verdict.BLOCK: "bold red"}
_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan",
                   "info": "dim"}


def write_text(report: Report, out: TextIO, policy: Policy) -> None:
    console = Console(file=out, highlight=False, soft_wrap=False, emoji=False, markup=False,
                      width=None if out.isatty() else 160)
    rev = f" @ {report.revision}" if report.revision else ""
    console.print(Text.assemble(
        ("hfguard", "bold"), f" {safe(report.target)}{safe(rev)}: ",
        (str(report.verdict), _VERDICT_STYLE[report.verdict]),
        f"  ({report.stats.get('files', 0)} files, {len(report.all_findings())} findings)"))
    findings = [f for f in report.all_findings()]
    if findings:
        table = Table(show_header=True, header_style="bold", expand=False)
        for col in ("severity", "rule", "file", "location", "message"):
            table.add_column(col, overflow="fold")
        for f in findings:
            table.add_row(*_row(f, policy))
        console.print(table)
    bad_files = [fr for fr in report.files if fr.verdict is not Verdict.PASS]
    for fr in bad_files:
        console.print(Text.assemble("  ", (str(fr.verdict), _VERDICT_STYLE[fr.verdict]),
                                    f" {safe(fr.path)} ({safe(fr.format)})"))
    remedies = sorted({f.remediation for f in findings if f.remediation})
    if remedies:
        console.print(Text("What to do:", style="bold"))
        for r in remedies:
            console.print(Text(f"  - {safe(r)}"))


def _row(f: Finding, policy: Policy) -> tuple[Text, ...]:
    sev = str(policy.effective_severity(f))
    tag = " (suppressed)" if policy.is_suppressed(f) else (" (error)" if f.error else "")
    return (Text.assemble((sev, _SEVERITY_STYLE[sev]), tag), Text(safe(f.rule)),
            Text(safe(f.file or "-")), Text(safe(f.location or "-")), Text(safe(f.message)))
