"""Verdict cache (SQLite, stdlib): a pinned commit checked once under the same rules is instant after.

The key covers everything that could change the answer: repo, commit sha, the checks and their
versions, the signature set, the policy fingerprint, the tiers and the options that matter. ERROR
reports are never stored (missing evidence must be looked for again).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from hfguard.findings import FileReport, Finding, Report, Severity, Verdict

SCHEMA = 1


def cache_dir() -> Path:
    """HFGUARD_CACHE_DIR, else <HF_HOME>/hfguard, else <XDG_CACHE_HOME or ~/.cache>/hfguard."""
    if os.environ.get("HFGUARD_CACHE_DIR"):
        return Path(os.environ["HFGUARD_CACHE_DIR"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hfguard"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "hfguard"


def cache_key(repo_id: str, sha: str, checks: list[dict[str, str]], policy_fingerprint: str,
              tiers: tuple[str, ...], options: dict[str, Any] | None = None) -> str:
    from hfguard import __version__
    from hfguard.signatures import signatures_version

    doc = {"schema": SCHEMA, "tool": __version__, "repo": repo_id, "sha": sha,
           "checks": sorted((c["id"], c["version"], c["tier"]) for c in checks),
           "signatures": signatures_version(), "policy": policy_fingerprint, "tiers": sorted(tiers),
           "options": options or {}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class VerdictCache:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "verdicts.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, repo TEXT, sha TEXT, "
                   "verdict TEXT, created REAL, report TEXT)")
        return db

    def get(self, key: str) -> Report | None:
        try:
            with self._connect() as db:
                row = db.execute("SELECT report FROM verdicts WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None  # a broken cache is a miss, never an answer
        if row is None:
            return None
        try:
            return report_from_dict(json.loads(row[0]))
        except (ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, report: Report) -> bool:
        if report.verdict is Verdict.ERROR or any(f.error for f in report.all_findings()):
            return False
        try:
            with self._connect() as db:
                db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                           (key, report.target.split("@")[0], report.revision, str(report.verdict),
                            time.time(), json.dumps(report.to_dict(), default=str)))
        except sqlite3.Error:
            return False
        return True


def finding_from_dict(d: dict[str, Any]) -> Finding:
    return Finding(check=d["check"], rule=d["rule"], severity=Severity.parse(d["severity"]),
                   message=d["message"], file=d.get("file"), location=d.get("location"),
                   evidence=d.get("evidence") or {}, remediation=d.get("remediation"),
                   error=bool(d.get("error")))


def report_from_dict(doc: dict[str, Any]) -> Report:
    """Inverse of Report.to_dict (what the JSON formatter writes)."""
    files = [FileReport(path=f["path"], format=f["format"], size=f.get("size"), sha256=f.get("sha256"),
                        findings=[finding_from_dict(x) for x in f.get("findings", [])],
                        verdict=Verdict(f["verdict"])) for f in doc.get("files", [])]
    return Report(target=doc["target"], source=doc["source"], revision=doc.get("revision"), files=files,
                  findings=[finding_from_dict(x) for x in doc.get("findings", [])],
                  checks=list(doc.get("checks", [])), verdict=Verdict(doc["verdict"]),
                  stats=dict(doc.get("stats", {})), card=dict(doc.get("card") or {}))
