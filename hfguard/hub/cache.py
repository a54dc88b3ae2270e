"""Verdict cache (SQLite, stdlib): a pinned commit checked once under the same rules is instant after.

The key covers everything that could change the answer: repo, commit sha, the files' paths, sizes
and content hashes (`manifest`), the checks and their versions, the signature set, the policy
fingerprint, the tiers and the options that matter. ERROR reports are never stored (missing
evidence must be looked for again).
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
from hfguard.paths import cache_dir  # noqa: F401 - re-exported: hub code names it here

SCHEMA = 2   # 2: keyed by the files' content hashes too


def manifest(files: list[Any]) -> str:
    """A digest of what a verdict is computed on: every file's path, size and content hash.

    Online the hashes come from the listing (LFS sha256, else the git blob id); offline from the
    HF cache's content-addressed blob names, so a file added to, removed from or re-linked in a
    cached snapshot is another key. A snapshot file that is no blob link is hashed here. A blob's
    name does not follow its bytes: offline, the file's identity on disk (inode, modification and
    change times; the change time cannot be set back) is part of the key too, so a blob rewritten in
    place, even to the same size, is scanned again rather than answered by the old verdict.
    """
    from hfguard.hub.fetch import digest

    rows = []
    for f in files:
        content = f.lfs_sha256 or f.blob_id
        on_disk: list[int] | str | None = None
        if getattr(f, "local", None) is not None:
            try:
                st = os.stat(f.local)
                on_disk = [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
                if not content:
                    content = "sha256:" + digest(f.local)
            except OSError:
                content = on_disk = "unreadable"
        rows.append((f.path, f.size, content, on_disk))
    return hashlib.sha256(json.dumps(sorted(rows), default=str).encode()).hexdigest()


def cache_key(repo_id: str, sha: str, checks: list[dict[str, str]], policy_fingerprint: str,
              tiers: tuple[str, ...], options: dict[str, Any] | None = None, content: str = "") -> str:
    """`content`: the files' manifest digest (`manifest`)."""
    from hfguard import __version__
    from hfguard.signatures import signatures_version

    doc = {"schema": SCHEMA, "tool": __version__, "repo": repo_id, "sha": sha, "content": content,
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
