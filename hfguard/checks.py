"""Checks are plugins: an id, a tier, a version, and findings.

A check looks at one file (`check_file`, called for each file it `applies_to`) or at the whole
target (`check_target`: provenance, base diffs, behavior). Built-in checks are listed in
`BUILTIN_CHECKS`; third parties register classes under the entry point group ``hfguard.checks``::

    [project.entry-points."hfguard.checks"]
    my-check = "my_pkg.checks:MyCheck"
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hfguard.budget import Budget
from hfguard.findings import Finding, Observation, Severity
from hfguard.paths import cache_dir
from hfguard.policy import Policy, PolicyError, load_policy
from hfguard.target import Target, TargetFile

ENTRY_POINT_GROUP = "hfguard.checks"

# (tier, "module:Class"): listing or selecting checks imports only the modules of the tiers asked for
# (torch and numpy live in the deeper tiers; a static scan never imports their checks).
BUILTIN_CHECKS: tuple[tuple[str, str], ...] = (
    ("static", "hfguard.static.pickle.check:SerializationCheck"),
    ("static", "hfguard.static.formats.safetensors:SafetensorsHeaderCheck"),
    ("static", "hfguard.static.formats.keras:KerasCheck"),
    ("static", "hfguard.static.code.custom_code:CustomCodeCheck"),
    ("static", "hfguard.static.formats.gguf:GGUFCheck"),
    ("static", "hfguard.static.formats.onnx:ONNXCheck"),
    ("static", "hfguard.static.formats.nemo:NemoCheck"),
    ("static", "hfguard.static.formats.skops:SkopsCheck"),
    ("static", "hfguard.static.formats.tensorflow:TensorFlowCheck"),
    ("static", "hfguard.static.formats.tflite:TFLiteCheck"),
    ("static", "hfguard.static.formats.executorch:ExecuTorchCheck"),
    ("static", "hfguard.static.formats.mlflow:MLflowCheck"),
    ("static", "hfguard.static.formats.diffusers:DiffusersCheck"),
    ("static", "hfguard.static.formats.flax:FlaxCheck"),
    ("static", "hfguard.static.formats.paddle:PaddleCheck"),
    ("static", "hfguard.static.provenance:ProvenanceCheck"),
    ("static", "hfguard.static.signing:SignatureCheck"),
    ("static", "hfguard.static.loaders:LoadersCheck"),
    ("static", "hfguard.static.lineage:LineageCheck"),
    ("weights", "hfguard.weights.check:WeightsAnomalies"),
    ("weights", "hfguard.weights.check:WeightsBaseDiff"),
    ("behavior", "hfguard.behavior.check:HomoglyphCheck"),
    ("behavior", "hfguard.behavior.check:PrivacyBackdoorCheck"),
)


# deeper-tier inputs that change what a verdict says; --device only changes where it is computed
VERDICT_OPTIONS = ("base", "reference", "probe_data")


def options_fingerprint(options: dict[str, Any] | None) -> str:
    """'' without deeper-tier inputs, else a digest of them (a --probe-data file by its content)."""
    chosen = {k: str(options[k]) for k in VERDICT_OPTIONS if options and options.get(k) is not None}
    if not chosen:
        return ""
    if "probe_data" in chosen:
        digest = hashlib.sha256()
        with open(chosen["probe_data"], "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        chosen["probe_data"] = "sha256:" + digest.hexdigest()
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ScanContext:
    policy: Policy
    target: Target
    options: dict[str, Any] = field(default_factory=dict)   # --device, --base, --probe-data ...
    progress: Callable[[str], None] = lambda msg: None
    budget_seconds: float = 60.0
    memo: dict[str, Any] = field(default_factory=dict)   # what a check computes once per scan
    checks: tuple[str, ...] = ()   # ids of the checks this scan runs, in order (checks may share a pass)
    # what checks share across the scan (the weights tier's shard streams): closed when the scan ends
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def budget(self) -> Budget:
        return Budget(seconds=self.budget_seconds)

    def file_facts(self, file: TargetFile) -> dict[str, Any]:
        """What one check learned about `file` that another would read again in this scan (a zip's
        directory, whether it is one whole pickle). Keyed by the file object itself, which the memo
        keeps alive: two files never share facts, even with the same path."""
        per_file = self.memo.setdefault("file-facts", {})
        entry = per_file.get(id(file))
        if entry is None or entry[0] is not file:
            entry = per_file[id(file)] = (file, {})
        return entry[1]

    def threshold(self, check: str, name: str, default: Any = None) -> Any:
        """The policy's value for a declared threshold, else `default` (else the declared default)."""
        if default is None:
            default = threshold_declarations()[check][name]
        return self.policy.threshold(check, name, default)


class Check:
    id: str = ""
    tier: str = "static"
    version: str = "1"
    description: str = ""
    # Thresholds the check reads, name -> default (the default's type is the type policy must give),
    # from [tool.hfguard.thresholds."<section>"]; the section is the check id unless several checks
    # share one (the documented `weights` and `behavior` sections).
    THRESHOLDS: ClassVar[dict[str, Any]] = {}
    # string thresholds that take one of a few values: name -> the values (others: a usage error)
    THRESHOLD_CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}
    threshold_section: ClassVar[str | None] = None

    def applies_to(self, file: TargetFile, fmt: str) -> bool:
        return False

    def check_file(self, file: TargetFile, fmt: str, ctx: ScanContext) -> Iterable[Finding]:
        return ()

    def check_target(self, target: Target, ctx: ScanContext) -> Iterable[Finding]:
        return ()

    # helpers so every check phrases findings the same way
    def finding(self, rule: str, severity: Severity, message: str, **kw: Any) -> Finding:
        return Finding(check=self.id, rule=rule, severity=severity, message=message, **kw)

    def findings_from(self, observations: Iterable[Observation], *, file: str | None = None,
                      remediation: str | Callable[[str], str | None] | None = None,
                      severity_of: Callable[[str], Severity] | None = None,
                      error: bool = False) -> Iterator[Finding]:
        """One finding per observation. `severity_of` rates those that carry no severity;
        `remediation` is one text for all, or a function of the rule id."""
        for o in observations:
            severity = o.severity if o.severity is not None or severity_of is None else severity_of(o.rule)
            if severity is None:
                raise ValueError(f"observation {o.rule} has no severity and nothing rates it")
            yield self.finding(o.rule, severity, o.message, file=file, location=o.location,
                               evidence=dict(o.evidence), error=error,
                               remediation=remediation(o.rule) if callable(remediation) else remediation)


def _load(ref: str) -> type[Check]:
    """`module:attr` (dotted attr, entry-point extras ignored) -> the object it names."""
    module, _, attr = ref.partition("[")[0].strip().partition(":")
    found: Any = importlib.import_module(module.strip())
    return functools.reduce(getattr, attr.strip().split("."), found)


def available_checks(tiers: Iterable[str] | None = None) -> list[Check]:
    """Built-ins (of `tiers`, default all) plus entry-point plugins, instantiated. A plugin that
    fails to load is an error."""
    wanted = None if tiers is None else set(tiers)
    checks: list[Check] = [_load(ref)() for tier, ref in BUILTIN_CHECKS if wanted is None or tier in wanted]
    checks += [_load(ref)() for ref in plugin_refs()]
    seen: set[str] = set()
    for c in checks:
        if not c.id or c.id in seen:
            raise RuntimeError(f"check {type(c).__name__} has a missing or duplicate id {c.id!r}")
        seen.add(c.id)
    return checks


def plugin_refs() -> list[str]:
    """The `module:attr` of every `hfguard.checks` entry point. Listing entry points imports
    importlib.metadata and reads every installed distribution (~40 ms, a third of a small scan's
    run): the answer is cached in the user cache, one file per sys.path, with what each sys.path
    entry held: its modification time, which changes when a distribution is installed, upgraded or
    removed there, and, when only that changed (a working folder where other files come and go),
    its distributions (`*.dist-info` / `*.egg-info` and their modification times)."""
    path = cache_dir() / "plugins" / f"{_digest([os.path.abspath(e or '.') for e in sys.path])}.json"
    try:
        doc = json.loads(path.read_bytes())
        if doc["python"] == sys.version and _same_entries(doc["entries"]) \
                and all(isinstance(r, str) for r in doc["refs"]):
            return list(doc["refs"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        pass
    from importlib.metadata import entry_points

    entries = [_entry_stamp(e, dists=True) for e in sys.path]
    refs = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"python": sys.version, "entries": entries, "refs": refs}),
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the listing
    return refs


def _same_entries(cached: list[Any]) -> bool:
    if len(cached) != len(sys.path):
        return False
    for entry, (mtime, dists) in zip(sys.path, cached, strict=True):
        if _entry_stamp(entry)[0] != mtime and _entry_stamp(entry, dists=True)[1] != dists:
            return False
    return True


def _entry_stamp(entry: str, dists: bool = False) -> list[Any]:
    """[modification time, distributions in it (only when asked)] of a sys.path entry."""
    folder = entry or "."
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return [None, []]
    found: list[Any] = []
    if dists:
        try:
            with os.scandir(folder) as it:
                found = sorted([d.name, d.stat().st_mtime_ns] for d in it
                               if d.name.endswith((".dist-info", ".egg-info", ".egg")))
        except OSError:
            found = ["not a folder", mtime]   # a zip: its modification time alone decides
    return [mtime, found]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:32]


def threshold_declarations(checks: Iterable[Check] | None = None) -> dict[str, dict[str, Any]]:
    """section -> {threshold name: default}, over the given checks (default: all available)."""
    out: dict[str, dict[str, Any]] = {}
    for c in available_checks() if checks is None else checks:
        section = out.setdefault(c.threshold_section or c.id, {})
        for name, default in c.THRESHOLDS.items():
            if name in section and type(section[name]) is not type(default):
                raise RuntimeError(f"threshold {name} of section {c.threshold_section or c.id} is declared "
                                   f"with two types")
            section.setdefault(name, default)
    return out


def _type_name(default: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(default), type(default).__name__)


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def validate_thresholds(thresholds: dict[str, Any], checks: Iterable[Check] | None = None) -> None:
    """ValueError naming the first unknown section or key, or mistyped value, and the valid ones."""
    checks = list(available_checks() if checks is None else checks)
    declared = threshold_declarations(checks)
    choices = {(c.threshold_section or c.id, n): v for c in checks for n, v in c.THRESHOLD_CHOICES.items()}
    for section, values in thresholds.items():
        if section not in declared or not declared[section]:
            valid = sorted(k for k, v in declared.items() if v)
            raise ValueError(f"unknown threshold section thresholds.{section!r}; valid sections: "
                             f"{', '.join(repr(v) for v in valid)}")
        if not isinstance(values, dict):
            raise ValueError(f"thresholds.{section!r} must be a table of name = value")
        known = declared[section]
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown threshold {name!r} in thresholds.{section!r}; valid: "
                                 f"{', '.join(sorted(known))}")
            if not _fits(value, known[name]):
                raise ValueError(f"threshold thresholds.{section!r}.{name} must be {_type_name(known[name])} "
                                 f"(default {known[name]!r}), not {value!r}")
            allowed = choices.get((section, name))
            if allowed and value not in allowed:
                raise ValueError(f"threshold thresholds.{section!r}.{name} must be one of "
                                 f"{', '.join(repr(a) for a in allowed)}, not {value!r}")


def load_checked_policy(path: Path | None = None) -> Policy:
    """load_policy, plus its thresholds validated against what the checks declare (PolicyError)."""
    policy = load_policy(path)
    if policy.thresholds:  # only then: validating imports every check class (light, but not free)
        try:
            validate_thresholds(policy.thresholds)
        except ValueError as exc:
            raise PolicyError(f"{policy.source or 'policy'}: {exc}") from None
    return policy


def checks_for_tiers(tiers: Iterable[str]) -> list[Check]:
    wanted = set(tiers)
    return [c for c in available_checks(wanted) if c.tier in wanted]
