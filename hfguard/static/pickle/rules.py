"""Classify pickle globals against `signatures/pickle_globals.yaml` (deny wins over allow)."""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from typing import Any

from hfguard import signatures
from hfguard.findings import Severity

SIGNATURE_FILE = "pickle_globals"
_MEMO_SIZE = 1 << 16  # classifications remembered (hostile pickles name up to 100k globals each)


@dataclass(frozen=True)
class GlobalRule:
    id: str
    kind: str  # "deny" | "allow"
    category: str
    description: str
    severity: Severity  # deny: when called/mutated
    referenced: Severity  # deny: when only referenced
    invokes_args: bool = False  # allow: calls the globals it receives
    rebuilt_only: bool = False  # allow: only when rebuilt without a constructor call (see check.py)
    exceptions: frozenset[str] = frozenset()  # deny: exact names this rule does not cover


@dataclass(frozen=True)
class Classification:
    status: str  # "denied" | "allowed" | "unknown"
    rule: GlobalRule | None = None
    pattern: str | None = None


@dataclass(frozen=True)
class StructuralRule:
    id: str
    severity: Severity
    description: str


class RuleSet:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.version = str(doc["version"])
        self._deny_exact: dict[str, GlobalRule] = {}
        self._deny_glob: list[tuple[str, GlobalRule]] = []
        self._allow_exact: dict[str, GlobalRule] = {}
        self._allow_glob: list[tuple[str, GlobalRule]] = []
        for entry in doc.get("deny", []):
            sev = Severity.parse(entry["severity"])
            rule = GlobalRule(
                entry["id"],
                "deny",
                entry.get("category", "unsafe"),
                entry["description"],
                sev,
                Severity.parse(entry.get("referenced", sev)),
                exceptions=frozenset(entry.get("except", ())),
            )
            for pat in entry["match"]:
                (
                    self._deny_glob.append((pat, rule))
                    if "*" in pat
                    else self._deny_exact.setdefault(pat, rule)
                )
        for entry in doc.get("allow", []):
            rule = GlobalRule(
                entry["id"],
                "allow",
                "allowed",
                entry["description"],
                Severity.INFO,
                Severity.INFO,
                bool(entry.get("invokes_args", False)),
                rebuilt_only=bool(entry.get("rebuilt_only", False)),
            )
            for pat in entry["match"]:
                (
                    self._allow_glob.append((pat, rule))
                    if "*" in pat
                    else self._allow_exact.setdefault(pat, rule)
                )
        # the last part of every exact deny name (`functools.partial` -> partial, `sys` -> sys): a module
        # matched by an allow glob re-exports what it imports (`from functools import partial` makes
        # `sklearn.neighbors._base.partial` functools.partial), and no class or function those
        # packages define shares such a name (bench/redteam_static.py lists the re-exports)
        self._deny_bare: dict[str, GlobalRule] = {}
        for name, rule in self._deny_exact.items():
            self._deny_bare.setdefault(name.rsplit(".", 1)[-1], rule)
        self._memo: dict[tuple[str, str | None], Classification] = {}
        self.structural = {
            rid: StructuralRule(rid, Severity.parse(v["severity"]), v["description"])
            for rid, v in doc.get("structural", {}).items()
        }

    def classify(self, qualname: str, attr: str | None = None) -> Classification:
        """`_classify`, remembered: a scan asks about the same few names again and again (860 asks,
        92 names in the bench corpus), and each answer walks every deny and allow glob."""
        key = (qualname, attr)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            found = self._memo[key] = self._classify(qualname, attr)
        return found

    def _classify(self, qualname: str, attr: str | None = None) -> Classification:
        """`attr` is the name part (what is fetched from the imported module). A dotted one walks
        attributes: `sklearn.linear_model._base` + `os.system` reaches os.system through the
        module's own import, so every suffix of the walk is checked against the deny list, and
        allow globs (which name modules, not attribute walks) do not apply."""
        parts = qualname.split(".")
        denied = self._denied(parts)
        if denied is not None:
            return denied
        walk = attr.split(".") if attr and "." in attr else []
        for i in range(len(walk)):
            denied = self._denied(walk[i:])
            if denied is not None:
                return denied
        if qualname in self._allow_exact:
            return Classification("allowed", self._allow_exact[qualname], qualname)
        if not walk:
            for pat, rule in self._allow_glob:
                if fnmatch.fnmatchcase(qualname, pat):
                    reexported = self._deny_bare.get(parts[-1])
                    if reexported is not None:
                        return Classification("denied", reexported, f"{pat} (re-export of {parts[-1]})")
                    return Classification("allowed", rule, pat)
        return Classification("unknown")

    def _denied(self, parts: list[str]) -> Classification | None:
        # deny matches the name and everything under it: os -> os.system, os.path.join
        qualname = ".".join(parts)
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            rule = self._deny_exact.get(prefix)
            if rule is not None and qualname not in rule.exceptions:
                return Classification("denied", rule, prefix)
        for pat, rule in self._deny_glob:
            if qualname in rule.exceptions:
                continue
            if fnmatch.fnmatchcase(qualname, pat) or fnmatch.fnmatchcase(qualname, pat + ".*"):
                return Classification("denied", rule, pat)
        return None

    def severity_of(self, rule_id: str) -> Severity:
        return self.structural[rule_id].severity


@functools.cache
def load_rules() -> RuleSet:
    return RuleSet(signatures.load(SIGNATURE_FILE))
