"""Formatters: turn a Report into text, JSON, SARIF, HTML or a CycloneDX ML-BOM. Checks never
format anything; each format is one module with one `write_*(report, out, policy)` function."""

from __future__ import annotations

import importlib
from typing import TextIO

from hfguard.findings import Report
from hfguard.policy import Policy

# format -> "module:function"; modules load on use (the hook never imports what it does not print)
_WRITERS = {
    "text": "hfguard.report.text:write_text",
    "json": "hfguard.report.json_format:write_json",
    "sarif": "hfguard.report.sarif:write_sarif",
    "html": "hfguard.report.html:write_html",
    "cyclonedx": "hfguard.report.cyclonedx:write_cyclonedx",
}
FORMATS = tuple(_WRITERS)


def write_report(report: Report, fmt: str, out: TextIO, policy: Policy) -> None:
    module, _, func = _WRITERS.get(fmt, _WRITERS["text"]).partition(":")
    getattr(importlib.import_module(module), func)(report, out, policy)
