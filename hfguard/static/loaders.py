"""What loading a model needs, against the loaders' own advisories (signatures/loader_advisories.yaml).

A model can steer its users onto a vulnerable loader: a `requirements.txt` that pins torch 2.4.1
makes `torch.load(weights_only=True)` unsafe again (CVE-2025-32434) for everyone who follows it.
`static.loaders` reports such pins (stronger when the model carries the format that reaches the
flaw) and, at low severity, the loader version a config says the model was saved with.
`exposure()` answers the same question for the loaders installed where hfguard runs (`hfguard env`),
read from package metadata without importing them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hfguard import signatures
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Severity
from hfguard.static.problems import TooLarge, load_json_bounded, read_bounded
from hfguard.target import Target, TargetFile

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet
# packaging and importlib.metadata are imported where used: most scans carry no requirements or
# config that needs them, and their imports are a tenth of a small scan's run

MAX_REQUIREMENTS_BYTES = 256 << 10
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([<>=!~][^;#]*)?")
# config keys that name the library version a model was saved with
_SAVED_WITH = {"transformers_version": "transformers", "keras_version": "keras", "torch_version": "torch"}
# other packages `hfguard env` reports even without an advisory: what loads models here
LOADERS = ("torch", "transformers", "keras", "tensorflow", "safetensors", "numpy", "joblib",
           "scikit-learn", "onnx", "onnxruntime", "diffusers", "sentence-transformers", "open_clip_torch",
           "llama-cpp-python", "gguf", "peft", "accelerate")


@dataclass(frozen=True)
class Advisory:
    id: str
    package: str
    affected: SpecifierSet
    fixed: str
    formats: frozenset[str]
    summary: str
    ghsa: str = ""
    model_types: frozenset[str] = frozenset()   # empty: any model

    def concerns(self, model_type: str | None) -> bool:
        return not self.model_types or model_type in self.model_types

    def affects(self, version: str) -> bool:
        from packaging.version import InvalidVersion, Version

        try:
            return self.affected.contains(Version(version), prereleases=True)
        except InvalidVersion:
            return False

    @property
    def reference(self) -> str:
        return f"{self.id}" + (f" / {self.ghsa}" if self.ghsa else "")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def advisories() -> tuple[Advisory, ...]:
    from packaging.specifiers import SpecifierSet

    doc = signatures.load("loader_advisories")
    return tuple(Advisory(id=a["id"], package=_canonical(a["package"]), affected=SpecifierSet(a["affected"]),
                          fixed=str(a["fixed"]), formats=frozenset(a.get("formats", ())),
                          summary=a["summary"], ghsa=a.get("ghsa", ""),
                          model_types=frozenset(a.get("model_types", ())))
                 for a in doc["advisories"])


def affecting(package: str, version: str) -> list[Advisory]:
    return [a for a in advisories() if a.package == _canonical(package) and a.affects(version)]


def pin_admits_only_affected(advisory: Advisory, spec: SpecifierSet) -> bool:
    """True when a requirement cannot be met by the fixed release or anything later, yet admits an
    affected version: following the model's pins installs a vulnerable loader."""
    from packaging.version import Version

    fixed = Version(advisory.fixed)
    later = Version(f"{fixed.major + 1000}")
    if spec.contains(fixed, prereleases=True) or spec.contains(later, prereleases=True):
        return False
    pinned = [s.version for s in spec if s.operator in ("==", "===")]
    if pinned:
        return any(advisory.affects(v.rstrip(".*")) for v in pinned)
    return True   # an upper bound below the fix


def parse_requirements(text: str) -> Iterator[tuple[int, str, SpecifierSet]]:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    for lineno, line in enumerate(text.splitlines(), 1):
        m = _REQUIREMENT.match(line)
        if not m or not m.group(2) or line.lstrip().startswith(("-", "#")):
            continue
        try:
            yield lineno, _canonical(m.group(1)), SpecifierSet(m.group(2).strip().replace(" ", ""))
        except InvalidSpecifier:
            continue


@dataclass(frozen=True)
class Installed:
    package: str
    version: str
    advisories: tuple[Advisory, ...]


def exposure() -> list[Installed]:
    """The model loaders installed in this environment and the advisories that affect them."""
    from importlib import metadata

    names = dict.fromkeys([*map(_canonical, LOADERS), *(a.package for a in advisories())])
    out = []
    for name in names:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        out.append(Installed(name, version, tuple(affecting(name, version))))
    return out


class LoadersCheck(Check):
    id = "static.loaders"
    tier = "static"
    version = "1"
    description = "loader versions a model pins or declares, against the loaders' advisories"

    def check_target(self, target: Target, ctx: ScanContext) -> Iterator[Finding]:
        carried = {f.meta.get("format") for f in target.files} | {
            "keras" for f in target.files if f.name.endswith(".keras")}
        for file in target.files:
            if file.name.startswith("requirements") and file.name.endswith(".txt"):
                yield from self._requirements(file, carried)
            elif file.name == "config.json" or file.name == "metadata.json":
                yield from self._saved_with(file)

    def _requirements(self, file: TargetFile, carried: set[str | None]) -> Iterator[Finding]:
        try:
            text = read_bounded(file, MAX_REQUIREMENTS_BYTES).decode("utf-8", "replace")
        except TooLarge:
            return
        for lineno, package, spec in parse_requirements(text):
            for adv in (a for a in advisories() if a.package == package and not a.model_types):
                if not pin_admits_only_affected(adv, spec):
                    continue
                reaches = bool(adv.formats & carried)
                yield self.finding(
                    "loader/vulnerable-pin", Severity.HIGH if reaches else Severity.MEDIUM,
                    f"{file.path}:{lineno}: requires {package}{spec}, which {adv.reference} affects: "
                    f"{adv.summary}" + (" — and this model carries the format that reaches it" if reaches
                                         else ""),
                    file=file.path, location=f"line {lineno}",
                    evidence={"package": package, "requirement": str(spec), "advisory": adv.id,
                              "fixed": adv.fixed, "model_carries_format": reaches},
                    remediation=f"load it with {package}>={adv.fixed}; ignore the model's pin")

    def _saved_with(self, file: TargetFile) -> Iterator[Finding]:
        try:
            doc = load_json_bounded(file, 4 << 20)
        except (TooLarge, ValueError):
            return   # other checks report unreadable configs
        if not isinstance(doc, dict):
            return
        for key, package in _SAVED_WITH.items():
            version = doc.get(key)
            if not isinstance(version, str):
                continue
            for adv in (a for a in affecting(package, version) if a.concerns(doc.get("model_type"))):
                yield self.finding(
                    "loader/saved-with-affected-version", Severity.LOW,
                    f"{file.path}: saved with {package} {version}, which {adv.reference} affects "
                    f"({adv.summary}); a user matching that version is exposed",
                    file=file.path, location=key,
                    evidence={"package": package, "version": version, "advisory": adv.id, "fixed": adv.fixed},
                    remediation=f"load it with {package}>={adv.fixed}")
