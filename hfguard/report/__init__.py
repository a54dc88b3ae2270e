"""Formatters: turn a Report into text, JSON or SARIF. Checks never format anything."""

from __future__ import annotations

from typing import TextIO

from hfguard.findings import Report
from hfguard.policy import Policy

FORMATS = ("text", "json", "sarif")


def write_report(report: Report, fmt: str, out: TextIO, policy: Policy) -> None:
    if fmt == "json":
        from hfguard.report.json_format import write_json

        write_json(report, out)
    elif fmt == "sarif":
        from hfguard.report.sarif import write_sarif

        write_sarif(report, out, policy)
    else:
        from hfguard.report.text import write_text

        write_text(report, out, policy)
