"""SARIF 2.1.0 for GitHub code scanning: stable ruleIds, security-severity, partialFingerprints."""

from __future__ import annotations

import json
import re
from typing import Any, TextIO

from hfguard import __version__
from hfguard.findings import Finding, Report, Severity
from hfguard.policy import Policy

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
                      Severity.LOW: "3.0", Severity.INFO: "0.0"}


def _level(sev: Severity) -> str:
    if sev >= Severity.HIGH:
        return "error"
    return "warning" if sev >= Severity.MEDIUM else "note"


def _uri(finding: Finding, report: Report) -> str:
    path = finding.file or report.target
    return re.sub(r"^\./", "", path.replace("\\", "/"))


def _line(finding: Finding) -> int:
    # source-level findings (the hooks' model references) carry "line N"
    m = re.fullmatch(r"line (\d+)", finding.location or "")
    return int(m.group(1)) if m else 1


def to_sarif(report: Report, policy: Policy) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in report.all_findings():
        sev = policy.effective_severity(f)
        rule = rules.setdefault(f.rule, {
            "id": f.rule,
            "name": re.sub(r"[^A-Za-z0-9]+", "_", f.rule).strip("_"),
            "shortDescription": {"text": f.rule},
            "fullDescription": {"text": f"hfguard {f.check} check: {f.rule}"},
            "help": {"text": f.remediation or f"See the hfguard documentation for {f.rule}."},
            "defaultConfiguration": {"level": _level(sev)},
            "properties": {"security-severity": _SECURITY_SEVERITY[sev],
                           "tags": ["security", f"hfguard/{f.check}"]},
        })
        # a rule's severity is the worst any of its findings had in this run
        if float(_SECURITY_SEVERITY[sev]) > float(rule["properties"]["security-severity"]):
            rule["properties"]["security-severity"] = _SECURITY_SEVERITY[sev]
            rule["defaultConfiguration"]["level"] = _level(sev)
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "level": _level(sev),
            "message": {"text": f.message + (f" [{f.location}]" if f.location else "")},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": _uri(f, report)},
                "region": {"startLine": _line(f)},
            }}],
            "partialFingerprints": {"hfguardFinding/v1": f.fingerprint()},
            "properties": {"check": f.check, "severity": str(sev), "evidence": f.evidence},
        }
        if policy.is_suppressed(f):
            result["suppressions"] = [{"kind": "external", "justification": "hfguard policy"}]
        results.append(result)
    rule_list = list(rules.values())
    index = {r["id"]: i for i, r in enumerate(rule_list)}
    for r in results:
        r["ruleIndex"] = index[r["ruleId"]]
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "hfguard", "version": __version__,
                                "semanticVersion": __version__,
                                "rules": rule_list}},
            "automationDetails": {"id": f"hfguard/{report.target}"},
            "properties": {"verdict": str(report.verdict), "revision": report.revision},
            "results": results,
        }],
    }


def write_sarif(report: Report, out: TextIO, policy: Policy) -> None:
    json.dump(to_sarif(report, policy), out, indent=2, default=str)
    out.write("\n")
