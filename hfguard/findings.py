"""The report vocabulary: severities, findings, verdicts and the reports that carry them."""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hfguard.rules import confidence_of


class Severity(enum.IntEnum):
    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        if isinstance(value, Severity):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {value!r}; expected one of "
                             f"{', '.join(s.name.lower() for s in cls)}") from None

    def __str__(self) -> str:
        return self.name.lower()


class Verdict(enum.Enum):
    """Ordered by how bad they are: a report's verdict is the worst of its parts.

    ERROR ranks above FLAG (evidence missing is never better than a doubt) and below BLOCK
    (a proven threat is the more useful answer when both are present).
    """

    PASS = "PASS"
    FLAG = "FLAG"
    ERROR = "ERROR"
    BLOCK = "BLOCK"

    @property
    def rank(self) -> int:
        return _VERDICT_RANK[self]

    @classmethod
    def worst(cls, verdicts) -> Verdict:
        return max(verdicts, key=lambda v: v.rank, default=cls.PASS)

    def __str__(self) -> str:
        return self.value


_VERDICT_RANK = {Verdict.PASS: 0, Verdict.FLAG: 1, Verdict.ERROR: 2, Verdict.BLOCK: 3}


@dataclass
class Finding:
    """One piece of evidence. `rule` is a stable id such as ``pickle/dangerous-global``.

    `error` marks a finding that says evidence could NOT be gathered (a check crashed, timed out,
    a download failed): it turns the verdict to ERROR, never to PASS.
    """

    check: str
    rule: str
    severity: Severity
    message: str
    file: str | None = None
    location: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    remediation: str | None = None
    error: bool = False
    # identifies the finding in place of `location` where the location moves while the thing does
    # not: a hook finding sits on "line N" of a source file but is about the model it names
    anchor: str | None = None
    # how sure the finding is (low | medium | high | certain); None: the rule registry's default
    confidence: str | None = None

    def fingerprint(self) -> str:
        """Stable identity for baselines and SARIF: what and where, not the wording."""
        key = json.dumps([self.check, self.rule, self.file, self.anchor or self.location], default=str)
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "rule": self.rule,
            "severity": str(self.severity),
            "message": self.message,
            "file": self.file,
            "location": self.location,
            "evidence": self.evidence,
            "remediation": self.remediation,
            "error": self.error,
            "confidence": self.resolved_confidence(),
            "fingerprint": self.fingerprint(),
        }

    def resolved_confidence(self) -> str | None:
        """This finding's confidence, else its rule's in the registry (None for unregistered rules)."""
        if self.confidence is not None:
            return self.confidence
        return confidence_of(self.rule)


@dataclass
class Observation:
    """One deviation a parser found, before a check turns it into Findings (`Check.findings_from`).

    `severity` is None where the check's rules rate it by rule id (the pickle signatures rate what
    the container scanner observes).
    """

    rule: str
    severity: Severity | None
    message: str
    location: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileReport:
    path: str
    format: str
    size: int | None
    sha256: str | None = None
    findings: list[Finding] = field(default_factory=list)
    verdict: Verdict = Verdict.PASS

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "size": self.size,
            "sha256": self.sha256,
            "verdict": str(self.verdict),
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class Report:
    """Everything one scan found. `findings` holds target-level evidence (provenance, behavior)."""

    target: str
    source: str
    revision: str | None = None
    files: list[FileReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    checks: list[dict[str, str]] = field(default_factory=list)
    verdict: Verdict = Verdict.PASS
    stats: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)   # model card metadata (base_model, license ...)

    def all_findings(self) -> list[Finding]:
        return [*self.findings, *(f for fr in self.files for f in fr.findings)]

    def to_dict(self) -> dict[str, Any]:
        from hfguard import __version__

        return {
            "tool": {"name": "hfguard", "version": __version__},
            "target": self.target,
            "source": self.source,
            "revision": self.revision,
            "verdict": str(self.verdict),
            "checks": self.checks,
            "findings": [f.to_dict() for f in self.findings],
            "files": [fr.to_dict() for fr in self.files],
            "stats": self.stats,
            "card": self.card,
        }


MAX_PLOT_POINTS = 2000


def plot_evidence(kind: str, title: str, series: list[dict[str, Any]], *, x_label: str = "",
                  y_label: str = "", threshold: float | None = None) -> dict[str, Any]:
    """A figure for the HTML report, kept in a finding's evidence under "plot" (so JSON and SARIF
    carry the numbers too). kind: "bar" (x = labels), "line", or "roc" (x = FPR, y = TPR).
    Series longer than MAX_PLOT_POINTS are thinned evenly."""
    def thin(values: list[Any]) -> list[Any]:
        if len(values) <= MAX_PLOT_POINTS:
            return list(values)
        step = len(values) / MAX_PLOT_POINTS
        return [values[int(i * step)] for i in range(MAX_PLOT_POINTS)]

    return {"kind": kind, "title": title, "x_label": x_label, "y_label": y_label, "threshold": threshold,
            "series": [{"name": s.get("name", ""), "x": thin(list(s["x"])),
                        "y": [round(float(v), 6) for v in thin(list(s["y"]))]} for s in series]}

