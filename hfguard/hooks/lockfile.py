"""`hfguard.lock`: pinned verdicts for the Hub models a repository references.

One `[[model]]` table per (repo, revision as written): the commit sha it resolved to, the verdict,
the findings that made it, and the *stamp* it was vetted under (tiers, check ids and versions,
signatures version, policy fingerprint). The hook trusts an entry, without any network, only
while its stamp equals the current one. The file is TOML, sorted, one value per line: diffs
stay readable and two runs over the same inputs write the same bytes. Written by tomli_w, so any
string a model puts in a finding (control characters, quotes, newlines) stays valid TOML.
"""

from __future__ import annotations

import datetime as _dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from hfguard.checks import options_fingerprint
from hfguard.findings import Finding, Report, Severity
from hfguard.policy import Policy

LOCK_NAME = "hfguard.lock"
LOCK_VERSION = 1
_HEADER = ("# hfguard.lock: verdicts for the Hub models this repository references.\n"
           "# Written by `hfguard lock`; commit it. An entry is trusted only while its stamp\n"
           "# (tiers, checks, signatures, policy) matches: then the hook needs no network.\n")


class LockError(ValueError):
    pass


@dataclass(frozen=True)
class Stamp:
    """Everything that, when it changes, makes a recorded verdict stale."""

    tiers: tuple[str, ...]
    checks: tuple[str, ...]          # "id@version", sorted
    signatures: str
    policy: str
    options: str = ""                # `checks.options_fingerprint` of the deeper-tier inputs


def current_stamp(policy: Policy, options: dict[str, Any] | None = None) -> Stamp:
    from hfguard.checks import checks_for_tiers
    from hfguard.signatures import signatures_version

    checks = checks_for_tiers(policy.tiers)
    return Stamp(tiers=tuple(sorted(policy.tiers)),
                 checks=tuple(sorted(f"{c.id}@{c.version}" for c in checks)),
                 signatures=signatures_version(), policy=policy.fingerprint(),
                 options=options_fingerprint(options))


@dataclass
class LockEntry:
    repo: str
    requested: str                   # the revision as written in the source ("" = default branch)
    revision: str                    # the commit sha it resolved to
    verdict: str
    stamp: Stamp
    date: str = ""
    tool: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.repo.lower(), self.requested)

    def to_findings(self) -> list[Finding]:
        return [Finding(check=f.get("check", "lock"), rule=f["rule"],
                        severity=Severity.parse(f["severity"]), message=f.get("message", ""),
                        file=f.get("file") or None, location=f.get("location") or None,
                        error=bool(f.get("error", False)))
                for f in self.findings]


def entry_from_report(repo: str, requested: str | None, report: Report, policy: Policy,
                      stamp: Stamp) -> LockEntry:
    """What a lock keeps of a vetted model: its sha, verdict and the findings that count."""
    if not report.revision:
        raise LockError(f"{repo}: the vetted report has no pinned revision")
    from hfguard import __version__

    kept = [f for f in report.all_findings()
            if f.error or (f.severity > Severity.INFO and not policy.is_suppressed(f))]
    findings = [{"check": f.check, "rule": f.rule, "severity": str(f.severity), "message": f.message,
                 "file": f.file or "", "location": f.location or "", "error": f.error}
                for f in kept]
    findings.sort(key=lambda d: (d["rule"], d["file"], d["location"], d["message"]))
    return LockEntry(repo=repo, requested=requested or "", revision=report.revision,
                     verdict=str(report.verdict), stamp=stamp,
                     date=_dt.datetime.now(_dt.UTC).date().isoformat(), tool=__version__,
                     findings=findings)


@dataclass
class Lockfile:
    path: Path
    entries: dict[tuple[str, str], LockEntry] = field(default_factory=dict)

    def get(self, repo: str, requested: str | None) -> LockEntry | None:
        return self.entries.get((repo.lower(), requested or ""))

    def lookup(self, repo: str, requested: str | None, stamp: Stamp) -> LockEntry | None:
        """A current entry for this reference, or None (missing or stale).

        A reference pinned to a sha also matches an entry recorded under another name for the
        same commit (a branch that resolved to it).
        """
        entry = self.get(repo, requested)
        if entry is None and requested:
            entry = next((e for e in self.entries.values()
                          if e.repo.lower() == repo.lower() and e.revision == requested), None)
        if entry is None or entry.stamp != stamp:
            return None
        return entry

    def put(self, entry: LockEntry) -> None:
        self.entries[entry.key] = entry

    def dumps(self) -> str:
        """The lock as TOML, written by tomli_w (every string escaped as TOML requires)."""
        models = []
        for e in sorted(self.entries.values(), key=lambda e: e.key):
            model: dict[str, Any] = {
                "repo": e.repo, "requested": e.requested, "revision": e.revision,
                "verdict": e.verdict, "date": e.date, "hfguard": e.tool,
                "tiers": list(e.stamp.tiers), "checks": list(e.stamp.checks),
                "signatures": e.stamp.signatures, "policy": e.stamp.policy}
            if e.stamp.options:   # absent when vetted without deeper-tier inputs
                model["options"] = e.stamp.options
            if e.findings:
                model["finding"] = [{k: f[k] for k in _FINDING_KEYS} for f in e.findings]
            models.append(model)
        body = tomli_w.dumps(_encodable({"version": LOCK_VERSION, "model": models}))
        # C1 controls, bidi controls and line separators are legal in TOML strings but act on,
        # reorder or break what a reviewer sees in a diff: written as escapes (basic strings only)
        return _HEADER + _UNSEEN.sub(lambda m: f"\\u{ord(m.group()):04x}", body)

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self.dumps(), encoding="utf-8")
        tmp.replace(self.path)


_FINDING_KEYS = ("check", "rule", "severity", "message", "file", "location", "error")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_UNSEEN = re.compile(r"[\x80-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _encodable(value: Any) -> Any:
    """Lone surrogates (undecodable bytes of a file name) cannot be written as UTF-8: U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {k: _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


def load_lock(path: Path) -> Lockfile:
    """Read a lockfile; a missing file is an empty lock, a malformed one is an error."""
    lock = Lockfile(path=path)
    if not path.exists():
        return lock
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LockError(f"cannot read {path}: {exc}") from None
    if doc.get("version") != LOCK_VERSION:
        raise LockError(f"{path}: unsupported lock version {doc.get('version')!r}")
    try:
        for m in doc.get("model", []):
            lock.put(LockEntry(
                repo=m["repo"], requested=m.get("requested", ""), revision=m["revision"],
                verdict=m["verdict"], date=m.get("date", ""), tool=m.get("hfguard", ""),
                stamp=Stamp(tiers=tuple(m["tiers"]), checks=tuple(m["checks"]),
                            signatures=m["signatures"], policy=m["policy"],
                            options=m.get("options", "")),
                findings=[dict(f) for f in m.get("finding", [])]))
    except (KeyError, TypeError) as exc:
        raise LockError(f"{path}: malformed entry ({exc})") from None
    return lock


def find_lock(start: Path | None = None) -> Path:
    """The nearest hfguard.lock upwards (stopping at a git root), else one in `start`."""
    start = (start or Path.cwd()).resolve()
    for folder in [start, *start.parents]:
        if (folder / LOCK_NAME).is_file():
            return folder / LOCK_NAME
        if (folder / ".git").exists():
            break
    return start / LOCK_NAME
