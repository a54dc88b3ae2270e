"""The rule registry: every rule id hfguard can emit, declared once in `signatures/rules/<prefix>.yaml`.

Each entry::

    - id: keras/tfsmlayer-external     # <prefix>/<name>; the file is named after the prefix
      check: static.keras              # the check that emits it (a list where several do)
      severity: high                   # default severity: info | low | medium | high | critical
      confidence: high                 # how sure a finding is: low | medium | high | certain
      title: ...                       # one line
      description: ...                 # what was seen and why it matters
      remediation: ...                 # what to do
      references: [CVE-..., https://...]

Severity says how bad it is if true; confidence says how likely it is true. A known-dangerous
pickle global is critical and certain; an unknown one is medium and low: a doubt, not evidence.
SARIF `rules[]`, `hfguard rules` and docs/rules.md come from here. Light: yaml only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfguard.paths import cache_dir
from hfguard.signatures import SIGNATURES_DIR, SignatureError, read_yaml

RULES_DIR = SIGNATURES_DIR / "rules"
SEVERITIES = ("info", "low", "medium", "high", "critical")  # hfguard.findings.Severity, by name
CONFIDENCES = ("low", "medium", "high", "certain")
# [project.urls] labels naming the project's public repository, most specific first
_REPO_LABELS = ("repository", "source", "source code", "code", "homepage", "home")
# emitters that are not checks: the engine (crashes, timeouts, empty targets), the Hub layer
# (resolution and download errors), the source-code hook and the fleet driver
NON_CHECK_EMITTERS = ("engine", "hub", "hook", "fleet")

_ID = re.compile(r"[a-z][a-z0-9-]*/[a-z0-9][a-z0-9-]*")
_KEYS = ("id", "check", "severity", "confidence", "title", "description", "remediation", "references")


class RuleError(ValueError):
    pass


@dataclass(frozen=True)
class Rule:
    id: str
    checks: tuple[str, ...]
    severity: str
    confidence: str
    title: str
    description: str
    remediation: str
    references: tuple[str, ...] = ()

    @property
    def prefix(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def anchor(self) -> str:
        """The id of the rule's heading in docs/rules.md (GitHub's slug of the heading text)."""
        return re.sub(r"[^a-z0-9-]", "", self.id.lower())

    @property
    def help_uri(self) -> str | None:
        """The rule's section of docs/rules.md in the project's repository; None when the project
        declares no public repository (nothing is linked rather than a guessed address)."""
        docs = docs_url()
        return f"{docs}#{self.anchor}" if docs else None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "check": list(self.checks), "severity": self.severity,
                "confidence": self.confidence, "title": self.title, "description": self.description,
                "remediation": self.remediation, "references": list(self.references)}


def _text(entry: dict[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RuleError(f"{where}: '{key}' must be a non-empty string")
    return " ".join(value.split())


def _rule(entry: Any, prefix: str, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise RuleError(f"{where}: a rule is a mapping")
    rid = entry.get("id")
    if not isinstance(rid, str) or not _ID.fullmatch(rid):
        raise RuleError(f"{where}: bad rule id {rid!r} (expected prefix/name, lower-case)")
    where = f"{where} ({rid})"
    if rid.split("/", 1)[0] != prefix:
        raise RuleError(f"{where}: rule ids in {prefix}.yaml start with '{prefix}/'")
    if set(entry) != set(_KEYS):
        missing, unknown = sorted(set(_KEYS) - set(entry)), sorted(set(entry) - set(_KEYS))
        raise RuleError(f"{where}: keys must be exactly {list(_KEYS)}; missing {missing}, unknown {unknown}")
    checks = entry["check"] if isinstance(entry["check"], list) else [entry["check"]]
    if not checks or not all(isinstance(c, str) and c for c in checks):
        raise RuleError(f"{where}: 'check' is a check id or a list of them")
    severity = entry["severity"]
    if severity not in SEVERITIES:
        raise RuleError(f"{where}: severity must be one of {list(SEVERITIES)}, not {severity!r}")
    if entry["confidence"] not in CONFIDENCES:
        raise RuleError(f"{where}: confidence must be one of {list(CONFIDENCES)}, "
                        f"not {entry['confidence']!r}")
    refs = entry["references"]
    if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
        raise RuleError(f"{where}: 'references' is a list of CVE/GHSA ids or URLs ([] if none)")
    return Rule(rid, tuple(checks), severity, entry["confidence"], _text(entry, "title", where),
                _text(entry, "description", where), _text(entry, "remediation", where), tuple(refs))


@functools.cache
def project_url() -> str | None:
    """The project's public repository: a `[project.urls]` entry of pyproject.toml (Repository,
    Source, Homepage), as the installed package's metadata carries it; None when there is none."""
    import importlib.metadata  # only for the reports that link rules (importing it costs ~20 ms)

    try:
        meta = importlib.metadata.metadata("hfguard")
    except importlib.metadata.PackageNotFoundError:
        return None
    urls: dict[str, str] = {}
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        urls.setdefault(label.strip().lower(), url.strip())
    if home := (meta.get_all("Home-page") or [None])[0]:   # the older single field (a backport
        # importlib_metadata raises KeyError on meta["Home-page"] when it is absent)
        urls.setdefault("homepage", home.strip())
    found = next((urls[k] for k in _REPO_LABELS if urls.get(k, "").startswith("https://")), None)
    return found.rstrip("/") if found else None


def docs_url() -> str | None:
    """docs/rules.md on the default branch of the project's GitHub or GitLab repository, else None."""
    home = project_url()
    if home is None:
        return None
    host = home.split("/")[2].lower()
    if host == "github.com":
        return f"{home}/blob/HEAD/docs/rules.md"
    if host == "gitlab.com":
        return f"{home}/-/blob/HEAD/docs/rules.md"
    return None


@functools.cache
def registry(folder: Path = RULES_DIR) -> dict[str, Rule]:
    """All rules by id, read and validated once. A broken registry is an error, never a gap.

    Reading and validating ~36 YAML files costs ~6 ms a run: the validated registry is kept as
    JSON in the user cache, keyed by the files' names, sizes and modification times (these are
    the shipped files; an edit changes the key)."""
    paths = sorted(folder.glob("*.yaml"), key=lambda p: p.name)   # (by name: Path ordering is slow)
    cache = _registry_cache(paths)
    try:
        cached = [Rule(d["id"], tuple(d["check"]), d["severity"], d["confidence"], d["title"],
                       d["description"], d["remediation"], tuple(d["references"]))
                  for d in json.loads(cache.read_bytes())] if cache else None
    except (OSError, ValueError, KeyError, TypeError):
        cached = None
    if cached:
        return {r.id: r for r in cached}
    rules = _read_registry(paths, folder)
    if cache:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps([r.to_dict() for r in rules.values()]), encoding="utf-8")
            os.replace(tmp, cache)
        except OSError:
            pass  # a read-only cache only costs the parse
    return rules


def _registry_cache(paths: list[Path]) -> Path | None:
    try:
        stamps = [(str(p), st.st_size, st.st_mtime_ns) for p in paths for st in [os.stat(p)]]
    except OSError:
        return None
    shape = [list(_KEYS), list(Rule.__dataclass_fields__)]   # a new rule field is a new cache
    digest = hashlib.sha256(json.dumps([shape, stamps]).encode()).hexdigest()[:32]
    return cache_dir() / "signatures" / f"rules-{digest}.json"


def _read_registry(paths: list[Path], folder: Path) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for path in paths:
        try:
            doc = read_yaml(path)   # parsed once per content, cached as JSON
        except SignatureError as exc:
            raise RuleError(f"cannot read rules {path}: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
            raise RuleError(f"{path}: a rules file is a mapping with a 'rules' list")
        for i, entry in enumerate(doc["rules"]):
            rule = _rule(entry, path.stem, f"{path.name} rule {i}")
            if rule.id in rules:
                raise RuleError(f"{path.name}: rule {rule.id} is declared twice")
            rules[rule.id] = rule
    if not rules:
        raise RuleError(f"no rules in {folder}")
    return rules


def get(rule_id: str) -> Rule | None:
    """The registered rule, or None (a third-party check's own rule ids are not registered here)."""
    return registry().get(rule_id)


def all_rules() -> list[Rule]:
    return sorted(registry().values(), key=lambda r: r.id)


def confidence_of(rule_id: str) -> str | None:
    rule = get(rule_id)
    return rule.confidence if rule else None


def reference_url(ref: str) -> str:
    """A reference as a link: CVE and GHSA ids to their advisory pages, URLs as they are."""
    if re.fullmatch(r"CVE-\d{4}-\d+", ref):
        return f"https://www.cve.org/CVERecord?id={ref}"
    if ref.startswith("GHSA-"):
        return f"https://github.com/advisories/{ref}"
    return ref


def references_markdown(rule: Rule) -> str:
    return ", ".join(f"[{r}]({reference_url(r)})" if reference_url(r) != r else f"<{r}>"
                     for r in rule.references)
