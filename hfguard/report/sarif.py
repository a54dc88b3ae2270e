"""SARIF 2.1.0 for GitHub code scanning: stable ruleIds, security-severity, partialFingerprints.

Rule metadata (title, description, help) comes from the rule registry (hfguard/rules.py); helpUri
and informationUri only where the project declares a public repository (pyproject [project.urls]);
a plugin's unregistered rule gets a generic entry. A run whose verdict is ERROR is reported as an
unsuccessful invocation, its missing-evidence findings as tool execution notifications.
"""

from __future__ import annotations

import json
import re
from typing import Any, TextIO
from urllib.parse import quote

from hfguard import __version__
from hfguard.findings import Finding, Report, Severity, Verdict
from hfguard.policy import Policy
from hfguard.rules import Rule, get, project_url, reference_url

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5",
                      Severity.LOW: "3.0", Severity.INFO: "0.0"}
# GitHub's `precision` rule property, from the registry's confidence
_PRECISION = {"certain": "very-high", "high": "high", "medium": "medium", "low": "low"}


def _level(sev: Severity) -> str:
    if sev >= Severity.HIGH:
        return "error"
    return "warning" if sev >= Severity.MEDIUM else "note"


def _uri(finding: Finding, report: Report) -> str:
    path = finding.file or report.target
    return _clean(path)


def _clean(path: str) -> str:
    """A file path as the URI reference SARIF requires: '/' separators, percent-encoded (a space,
    '%', a newline in a hostile file name, an undecodable byte), a Windows drive letter kept as 'C:/'."""
    path = re.sub(r"^\./", "", path.replace("\\", "/"))
    # an undecodable name (lone surrogates) as the bytes it has on disk: %FF, never a crash
    return re.sub(r"^([A-Za-z])%3A/", r"\1:/", quote(path, safe="/@", errors="surrogateescape"))


def _plain(text: str) -> str:
    """A message as SARIF plain text: viewers render `[text](target)` in it as a link (SARIF 2.1.0
    §3.11.6, embedded links; the target may be any URI), so the brackets of data quoted in it (a
    pickle global named `[Apply fix](https://evil.example)`) are escaped as the spec asks, `\\[`."""
    return re.sub(r"(\\*)([\[\]])", lambda m: m.group(1) * 2 + "\\" + m.group(2), text)


def _line(finding: Finding) -> int:
    # source-level findings (the hooks' model references) carry "line N"
    m = re.fullmatch(r"line (\d+)", finding.location or "")
    return int(m.group(1)) if m else 1


def _help(rule: Rule) -> dict[str, str]:
    """The rule's whole entry (what it means, what to do, references): the help a viewer shows
    needs no link, which exists only when the project declares a public repository."""
    text = f"{rule.description}\nWhat to do: {rule.remediation}"
    markdown = f"{rule.description}\n\n**What to do:** {rule.remediation}"
    if rule.references:
        text += "\nReferences: " + ", ".join(reference_url(r) for r in rule.references)
        markdown += "\n\n**References:** " + ", ".join(
            f"[{r}]({reference_url(r)})" for r in rule.references)
    if rule.help_uri:
        markdown += f"\n\n[{rule.id} in the hfguard rules]({rule.help_uri})"
    return {"text": text, "markdown": markdown}


def _rule_entry(f: Finding, sev: Severity, policy: Policy) -> dict[str, Any]:
    rule = get(f.rule)
    entry: dict[str, Any] = {"id": f.rule, "name": re.sub(r"[^A-Za-z0-9]+", "_", f.rule).strip("_")}
    if rule is None:  # a plugin's own rule: what the finding says is all there is
        return entry | {
            "shortDescription": {"text": f.rule},
            "fullDescription": {"text": f"hfguard {f.check} check: {f.rule}"},
            "help": {"text": f.remediation or f"See the documentation of the {f.check} check for {f.rule}."},
            "defaultConfiguration": {"level": _level(sev)},
            "properties": {"security-severity": _SECURITY_SEVERITY[sev],
                           "tags": ["security", f"hfguard/{f.check}"]},
        }
    default = policy.severity_overrides.get(rule.id, Severity.parse(rule.severity))
    return entry | {
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.description},
        "help": _help(rule),
        **({"helpUri": rule.help_uri} if rule.help_uri else {}),
        "defaultConfiguration": {"level": _level(default)},
        "properties": {"security-severity": _SECURITY_SEVERITY[max(default, sev)],
                       "precision": _PRECISION[rule.confidence], "confidence": rule.confidence,
                       "tags": ["security", *(f"hfguard/{c}" for c in rule.checks)]},
    }


def _artifacts(report: Report) -> list[dict[str, Any]]:
    out = []
    for fr in report.files:
        art: dict[str, Any] = {"location": {"uri": _clean(fr.path)}}
        if fr.size is not None:
            art["length"] = fr.size
        if fr.sha256:
            art["hashes"] = {"sha-256": fr.sha256}
        out.append(art)
    return out


def _location(f: Finding, report: Report, artifact_index: dict[str, int]) -> dict[str, Any]:
    uri = _uri(f, report)
    artifact: dict[str, Any] = {"uri": uri}
    if uri in artifact_index:
        artifact["index"] = artifact_index[uri]
    return {"physicalLocation": {"artifactLocation": artifact, "region": {"startLine": _line(f)}}}


def to_sarif(report: Report, policy: Policy) -> dict[str, Any]:
    artifacts = _artifacts(report)
    artifact_index = {a["location"]["uri"]: i for i, a in enumerate(artifacts)}
    rules: dict[str, dict[str, Any]] = {}
    results, notifications = [], []
    for f in report.all_findings():
        sev = policy.effective_severity(f)
        rule = rules.setdefault(f.rule, _rule_entry(f, sev, policy))
        # a rule's security severity is the worst any of its findings had in this run
        if float(_SECURITY_SEVERITY[sev]) > float(rule["properties"]["security-severity"]):
            rule["properties"]["security-severity"] = _SECURITY_SEVERITY[sev]
        location = _location(f, report, artifact_index)
        confidence = f.resolved_confidence()
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "level": _level(sev),
            "message": {"text": _plain(f.message + (f" ({f.location})" if f.location else ""))},
            "locations": [location],
            "partialFingerprints": {"hfguardFinding/v1": f.fingerprint()},
            "properties": {"check": f.check, "severity": str(sev), "evidence": f.evidence,
                           **({"confidence": confidence} if confidence else {})},
        }
        if policy.is_suppressed(f):
            result["suppressions"] = [{"kind": "external", "justification": "hfguard policy"}]
        results.append(result)
        if f.error:  # evidence that could not be gathered: the tool, not the model, failed here
            notifications.append({"level": "error", "message": {"text": _plain(f.message)},
                                  "descriptor": {"id": f.rule}, "locations": [location],
                                  "properties": {"check": f.check}})
    rule_list = list(rules.values())
    index = {r["id"]: i for i, r in enumerate(rule_list)}
    for r in results:
        r["ruleIndex"] = index[r["ruleId"]]
    invocation: dict[str, Any] = {"executionSuccessful": report.verdict is not Verdict.ERROR}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "hfguard", "version": __version__,
                                "semanticVersion": __version__,
                                **({"informationUri": home} if (home := project_url()) else {}),
                                "rules": rule_list}},
            "invocations": [invocation],
            "automationDetails": {"id": f"hfguard/{report.target}"},
            "artifacts": artifacts,
            "properties": {"verdict": str(report.verdict), "revision": report.revision},
            "results": results,
        }],
    }


def write_sarif(report: Report, out: TextIO, policy: Policy) -> None:
    json.dump(to_sarif(report, policy), out, indent=2, default=str)
    out.write("\n")
