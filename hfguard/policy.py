"""Policy: how findings become verdicts, read from `[tool.hfguard]` or `hfguard.toml`.

Example (pyproject.toml)::

    [tool.hfguard]
    block-at = "high"          # severity at or above which a finding blocks
    flag-at = "medium"         # ... flags
    fail-on = "flag"           # exit 1 at this verdict or worse: flag | block | never
    tiers = ["static"]
    allow = ["sentence-transformers/*"]   # repos/orgs trusted without checks ... still scanned statically
    deny = ["evil-org/*"]
    ignore-rules = ["pickle/unknown-global"]
    baseline = ["<finding fingerprint>", ...]   # accepted findings
    [tool.hfguard.severity]      # per-rule severity overrides
    "provenance/unpinned-revision" = "medium"
    [tool.hfguard.thresholds.weights]  # per-check settings, declared by each check (THRESHOLDS)
    robust-z = 8.0
    [tool.hfguard.thresholds."static.serialization"]   # keyed by check id, or a shared section
    max-opcodes = 20000000
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfguard.findings import Finding, Severity, Verdict

TIERS = ("static", "weights", "behavior")
SIGNER_KINDS = ("key", "certificate")


@dataclass(frozen=True)
class TrustedSigner:
    """A public key or a (root/intermediate) certificate whose signatures the policy trusts."""

    kind: str          # "key" | "certificate"
    source: str        # where it was read from
    pem: bytes


@dataclass(frozen=True)
class SigningPolicy:
    require_signature: bool = False
    trusted_signers: tuple[TrustedSigner, ...] = ()


class PolicyError(ValueError):
    pass


@dataclass
class Policy:
    block_at: Severity = Severity.HIGH
    flag_at: Severity = Severity.MEDIUM
    fail_on: Verdict | None = Verdict.FLAG  # None: never fail on findings (errors still exit 2)
    tiers: tuple[str, ...] = ("static",)
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    ignore_rules: frozenset[str] = frozenset()
    baseline: frozenset[str] = frozenset()
    severity_overrides: dict[str, Severity] = field(default_factory=dict)
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    signing: SigningPolicy = field(default_factory=SigningPolicy)
    source: str | None = None  # where it was read from, for the report

    # -- deciding -------------------------------------------------------------------------------
    def effective_severity(self, finding: Finding) -> Severity:
        return self.severity_overrides.get(finding.rule, finding.severity)

    def is_suppressed(self, finding: Finding) -> bool:
        if finding.error:  # missing evidence is never waved through by configuration
            return False
        return finding.rule in self.ignore_rules or finding.fingerprint() in self.baseline

    def verdict_of(self, findings: list[Finding]) -> Verdict:
        verdicts = []
        for f in findings:
            if self.is_suppressed(f):
                continue
            if f.error:
                verdicts.append(Verdict.ERROR)
                continue
            sev = self.effective_severity(f)
            if sev >= self.block_at:
                verdicts.append(Verdict.BLOCK)
            elif sev >= self.flag_at:
                verdicts.append(Verdict.FLAG)
        return Verdict.worst(verdicts)

    def fails(self, verdict: Verdict) -> bool:
        return self.fail_on is not None and verdict.rank >= self.fail_on.rank

    def threshold(self, check: str, name: str, default: Any) -> Any:
        return self.thresholds.get(check, {}).get(name, default)

    def repo_listed(self, repo: str, patterns: tuple[str, ...]) -> bool:
        repo = repo.lower()
        return any(fnmatch.fnmatchcase(repo, p.lower()) or repo.split("/")[0] == p.lower()
                   for p in patterns)

    def fingerprint(self) -> str:
        """Identity of everything that changes verdicts, for cache keys and lockfiles."""
        import hashlib
        import json

        doc = {
            "block_at": int(self.block_at), "flag_at": int(self.flag_at),
            "tiers": list(self.tiers), "allow": sorted(self.allow), "deny": sorted(self.deny),
            "ignore": sorted(self.ignore_rules), "baseline": sorted(self.baseline),
            "sev": {k: int(v) for k, v in sorted(self.severity_overrides.items())},
            "thresholds": self.thresholds,
            "signing": [self.signing.require_signature,
                        sorted(f"{s.kind}:{hashlib.sha256(s.pem).hexdigest()}"
                               for s in self.signing.trusted_signers)],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_fail_on(value: str) -> Verdict | None:
    value = value.strip().lower()
    if value == "never":
        return None
    if value in ("flag", "block", "error"):
        return Verdict[value.upper()]
    raise PolicyError(f"fail-on must be flag, block, error or never, not {value!r}")


def policy_from_mapping(doc: dict[str, Any], source: str | None = None) -> Policy:
    known = {"block-at", "flag-at", "fail-on", "tiers", "allow", "deny", "ignore-rules",
             "baseline", "severity", "thresholds", "require-signature", "trusted-signers"}
    unknown = set(doc) - known
    if unknown:
        raise PolicyError(f"{source or 'policy'}: unknown keys {sorted(unknown)}")
    try:
        policy = Policy(
            block_at=Severity.parse(doc.get("block-at", "high")),
            flag_at=Severity.parse(doc.get("flag-at", "medium")),
            fail_on=parse_fail_on(doc.get("fail-on", "flag")),
            tiers=tuple(doc.get("tiers", ("static",))),
            allow=tuple(doc.get("allow", ())),
            deny=tuple(doc.get("deny", ())),
            ignore_rules=frozenset(doc.get("ignore-rules", ())),
            baseline=frozenset(doc.get("baseline", ())),
            severity_overrides={k: Severity.parse(v) for k, v in doc.get("severity", {}).items()},
            thresholds=dict(doc.get("thresholds", {})),
            signing=SigningPolicy(bool(doc.get("require-signature", False)),
                                  _trusted_signers(doc.get("trusted-signers", []), source)),
            source=source,
        )
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"{source or 'policy'}: {exc}") from None
    bad = [t for t in policy.tiers if t not in TIERS]
    if bad:
        raise PolicyError(f"{source or 'policy'}: unknown tiers {bad}; expected {list(TIERS)}")
    if policy.flag_at > policy.block_at:
        raise PolicyError(f"{source or 'policy'}: flag-at is above block-at")
    return policy


def _trusted_signers(entries: Any, source: str | None) -> tuple[TrustedSigner, ...]:
    """`trusted-signers = [{ key = "keys/acme.pub" }, { certificate = "acme-root.pem" }]`; paths are
    relative to the policy file."""
    if not isinstance(entries, list):
        raise ValueError("trusted-signers must be a list of { key = PATH } or { certificate = PATH }")
    base = Path(source).parent if source else Path.cwd()
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in SIGNER_KINDS:
            raise ValueError(f"trusted-signers entry {entry!r}: expected {{ key = PATH }} or "
                             "{ certificate = PATH }")
        kind, rel = next(iter(entry.items()))
        path = base / str(rel)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"trusted-signers: cannot read {path}: {exc.strerror}") from None
        out.append(TrustedSigner(kind=kind, source=str(path), pem=pem))
    return tuple(out)


def find_policy_file(start: Path) -> Path | None:
    """The nearest hfguard.toml, or pyproject.toml with a [tool.hfguard] table, upwards."""
    for folder in [start, *start.parents]:
        candidate = folder / "hfguard.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "hfguard" in _read_toml(pyproject).get("tool", {}):
            return pyproject
    return None


def load_policy(path: Path | None = None, start: Path | None = None) -> Policy:
    """Policy from an explicit file, else the nearest one above `start`, else the defaults."""
    if path is None:
        path = find_policy_file((start or Path.cwd()).resolve())
        if path is None:
            return Policy()
    doc = _read_toml(path)
    table = doc.get("tool", {}).get("hfguard", {}) if path.name == "pyproject.toml" else doc
    return policy_from_mapping(table, source=str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy {path}: {exc}") from None
