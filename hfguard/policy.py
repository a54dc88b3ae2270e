"""Policy: how findings become verdicts, read from `[tool.hfguard]` or `hfguard.toml`.

Example (pyproject.toml; hfguard.toml takes the same text, or the keys without the table)::

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
        if finding.rule in self.ignore_rules:
            return True
        return bool(self.baseline) and finding.fingerprint() in self.baseline   # (a hash per finding)

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
    where = source or "policy"
    if not isinstance(doc, dict):
        raise PolicyError(f"{where}: the hfguard policy must be a table of keys, not {doc!r}")
    known = {"block-at", "flag-at", "fail-on", "tiers", "allow", "deny", "ignore-rules",
             "baseline", "severity", "thresholds", "require-signature", "trusted-signers"}
    unknown = set(doc) - known
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        policy = Policy(
            block_at=_severity(doc, "block-at", "high"),
            flag_at=_severity(doc, "flag-at", "medium"),
            fail_on=parse_fail_on(_string(doc, "fail-on", "flag")),
            tiers=_strings(doc, "tiers", ("static",)),
            allow=_strings(doc, "allow"),
            deny=_strings(doc, "deny"),
            ignore_rules=frozenset(_strings(doc, "ignore-rules")),
            baseline=frozenset(_strings(doc, "baseline")),
            severity_overrides={k: _severity(_table(doc, "severity"), k, key=f'severity."{k}"')
                                for k in _table(doc, "severity")},
            thresholds=_thresholds(doc),
            signing=SigningPolicy(_boolean(doc, "require-signature", False),
                                  _trusted_signers(doc.get("trusted-signers", []), source)),
            source=source,
        )
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"{where}: {exc}") from None
    for key, ids in (("severity", policy.severity_overrides), ("ignore-rules", policy.ignore_rules)):
        _check_rule_ids(ids, f"{where}: {key}")
    bad = [t for t in policy.tiers if t not in TIERS]
    if bad:
        raise PolicyError(f"{where}: unknown tiers {bad}; expected {list(TIERS)}")
    if policy.flag_at > policy.block_at:
        raise PolicyError(f"{where}: flag-at is above block-at")
    return policy


def _check_rule_ids(ids: Any, where: str) -> None:
    """A rule id under a prefix hfguard owns (pickle/, weights/ ...) that the registry does not know
    is a typo that would silently change nothing: a usage error, with the nearest ids. Ids under
    other prefixes may belong to a plugin's checks and are taken as they are."""
    import difflib

    from hfguard import rules

    known = rules.registry()
    prefixes = {r.split("/", 1)[0] for r in known}
    for rule_id in sorted(ids):
        if rule_id not in known and rule_id.split("/", 1)[0] in prefixes:
            near = difflib.get_close_matches(rule_id, list(known), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else " (`hfguard rules` lists them)"
            raise PolicyError(f"{where}: unknown rule id {rule_id!r}{hint}")


# Each key's type is checked here, so a mistyped value is a PolicyError that names the key (a usage
# error, exit 2), never a TypeError or AttributeError deep inside: TOML gives str, int, float, bool,
# datetimes, lists and tables, and a policy may hold any of them anywhere.
def _string(doc: dict[str, Any], name: str, default: str, *, key: str | None = None) -> str:
    value = doc.get(name, default)
    if not isinstance(value, str):
        raise ValueError(f"{key or name} must be a string, not {value!r}")
    return value


def _severity(doc: dict[str, Any], name: str, default: str = "", *, key: str | None = None) -> Severity:
    value = _string(doc, name, default, key=key)
    try:
        return Severity.parse(value)
    except ValueError as exc:
        raise ValueError(f"{key or name}: {exc}") from None


def _strings(doc: dict[str, Any], name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    value = doc.get(name, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings, not {value!r}")
    return tuple(value)


def _boolean(doc: dict[str, Any], name: str, default: bool) -> bool:
    value = doc.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return value


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a table, not {value!r}")
    return value


def _thresholds(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sections of name = value; the names and value types are checked against what the checks
    declare (hfguard.checks.validate_thresholds) when a command loads the policy."""
    sections = _table(doc, "thresholds")
    for section, values in sections.items():
        if not isinstance(values, dict):
            raise ValueError(f"thresholds.{section!r} must be a table of name = value, not {values!r}")
    return dict(sections)


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
        if not isinstance(rel, str) or not rel:
            raise ValueError(f"trusted-signers entry {entry!r}: the {kind} is a path (a string)")
        path = base / rel
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
        tool = _read_toml(pyproject).get("tool") if pyproject.is_file() else None
        if isinstance(tool, dict) and "hfguard" in tool:
            return pyproject
    return None


def load_policy(path: Path | None = None, start: Path | None = None) -> Policy:
    """Policy from an explicit file, else the nearest one above `start`, else the defaults."""
    if path is None:
        path = find_policy_file((start or Path.cwd()).resolve())
        if path is None:
            return Policy()
    doc = _read_toml(path)
    tool = doc.get("tool", {}).get("hfguard") if isinstance(doc.get("tool"), dict) else None
    if path.name == "pyproject.toml":
        table = tool or {}
    elif tool is not None:
        # hfguard.toml also takes the [tool.hfguard] table, so pyproject's example pastes as is
        if set(doc) != {"tool"} or set(doc["tool"]) != {"hfguard"}:
            raise PolicyError(f"{path}: put every key under [tool.hfguard] or none; "
                              "other tables or keys beside it are not read")
        table = tool
    else:
        table = doc
    return policy_from_mapping(table, source=str(path))


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only when there is a policy file to read

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy {path}: {exc}") from None
