from __future__ import annotations

import json
from typing import TextIO

from hfguard.findings import Report


def write_json(report: Report, out: TextIO) -> None:
    json.dump(report.to_dict(), out, indent=2, default=str)
    out.write("\n")
