"""The report as JSON: exact values (nothing escaped or shortened), the same shape `check` caches."""

from __future__ import annotations

import json
from typing import TextIO

from hfguard.findings import Report
from hfguard.policy import Policy


def write_json(report: Report, out: TextIO, policy: Policy | None = None) -> None:
    out.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")   # one write, not one per token
