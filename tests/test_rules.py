"""The rule registry is complete and current: every rule id the code can emit is declared once in
signatures/rules/, every declared rule is emitted by the code and fires in a test, entries are valid,
and docs/rules.md is what `hfguard rules --format markdown` prints."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hfguard import rules as registry
from hfguard.checks import available_checks
from hfguard.cli import main
from hfguard.commands.rules import render_markdown
from hfguard.findings import Finding, Severity

ROOT = Path(__file__).resolve().parents[1]
PACKAGE, SIGNATURES, TESTS = ROOT / "hfguard", ROOT / "signatures", ROOT / "tests"
RULE_ID = re.compile(r"[a-z][a-z0-9-]*/[a-z0-9][a-z0-9-]*")
# calls whose first argument is a rule id, and keywords that carry one
RULE_CALLS = {"finding", "Finding", "Observation", "_hook_finding", "f", "bad"}

# Rule ids the code builds at run time: the f-string (as written in the source) -> its values.
DYNAMIC: dict[str, list[str]] = {
    # lfs_pointer_problem(file, "<area>") in each format check: enumerated from the source below
    'f"{area}/lfs-pointer"': [],
    # hfguard/weights/diff.py judge(): one rule per kind of structural difference from the base
    'f"weights/{rule}"': ["weights/base-shape-mismatch", "weights/base-tensors-removed",
                          "weights/base-tensors-added", "weights/base-dtype-changed"],
}

# Rule ids the code reacts to that a branch still in flight will emit and register. The test fails once
# such an id is registered, so that its entry goes.
AWAITED: dict[str, str] = {}

# Registered rules no test makes fire, with the reason (keep this empty unless it is truly impossible).
NOT_FIRED_IN_TESTS: dict[str, str] = {
    "hub/offline": "raised only when huggingface_hub refuses a request for offline mode after hfguard "
                   "found the Hub online (HF_HUB_OFFLINE switched on mid-run): hfguard checks offline "
                   "mode first and then resolves from the cache (hub/offline-not-cached, tested), so "
                   "no deterministic test reaches it",
}


def _call_name(node: ast.Call) -> str:
    return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")


@functools.cache
def _emitted_in_source() -> tuple[frozenset[str], frozenset[str]]:
    """(rule ids written as literals in rule positions or with a registered prefix, f-strings in rule
    positions). A literal in a rule position with a new prefix is caught too."""
    prefixes = {r.prefix for r in registry.all_rules()}
    literals: set[str] = set()
    dynamic: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        nodes = list(ast.walk(ast.parse(source)))
        for node in nodes:
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and RULE_ID.fullmatch(node.value) and node.value.split("/")[0] in prefixes:
                literals.add(node.value)
            if not isinstance(node, ast.Call):
                continue
            carried = [kw.value for kw in node.keywords if kw.arg == "rule"]
            if _call_name(node) in RULE_CALLS and node.args:
                carried.append(node.args[0])
            for value in carried:
                if isinstance(value, ast.Constant) and isinstance(value.value, str) and "/" in value.value:
                    literals.add(value.value)
                elif isinstance(value, ast.JoinedStr):
                    dynamic.add(ast.get_source_segment(source, value))
        # `rule, msg = "check/timeout", ...` in the engine
        for node in nodes:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple) \
                    and isinstance(node.value, ast.Tuple):
                for target, value in zip(node.targets[0].elts, node.value.elts, strict=False):
                    if getattr(target, "id", "") == "rule" and isinstance(value, ast.Constant):
                        literals.add(value.value)
    return frozenset(literals), frozenset(dynamic)


@functools.cache
def _lfs_areas() -> tuple[str, ...]:
    areas = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _call_name(node) == "lfs_pointer_problem" \
                    and isinstance(node.args[-1], ast.Constant):
                areas.append(f"{node.args[-1].value}/lfs-pointer")
    return tuple(areas)


def _declared_in_signatures() -> set[str]:
    """Rule ids the YAML-driven analysers emit (custom code, Keras) and the pickle structural table."""
    out: set[str] = set()
    custom = yaml.safe_load((SIGNATURES / "custom_code.yaml").read_text())
    out |= {c["rule"] for c in custom["calls"]} | {r["rule"] for r in custom["rules"].values()}
    out |= {r["rule"] for r in yaml.safe_load((SIGNATURES / "keras.yaml").read_text())["rules"].values()}
    out |= set(yaml.safe_load((SIGNATURES / "pickle_globals.yaml").read_text())["structural"])
    return out


def emitted_rule_ids() -> set[str]:
    literals, dynamic = _emitted_in_source()
    unknown = dynamic - set(DYNAMIC)
    assert not unknown, f"rule ids built at run time that DYNAMIC does not enumerate: {unknown}"
    weights_diff = (PACKAGE / "weights" / "diff.py").read_text()
    for rid in DYNAMIC['f"weights/{rule}"']:
        assert f'"{rid.split("/")[1]}"' in weights_diff, rid
    expanded = {rid for values in DYNAMIC.values() for rid in values} | set(_lfs_areas())
    return literals | expanded | _declared_in_signatures()


def test_every_rule_the_code_can_emit_is_registered():
    missing = sorted(emitted_rule_ids() - set(registry.registry()) - set(AWAITED))
    assert missing == [], f"add these to signatures/rules/<prefix>.yaml: {missing}"
    landed = {rid for rid in AWAITED if rid in registry.registry()}
    assert landed == set(), f"now registered: remove them from AWAITED: {landed}"


def test_every_registered_rule_is_emitted_by_the_code():
    stale = sorted(set(registry.registry()) - emitted_rule_ids())
    assert stale == [], f"registered but emitted nowhere (remove them or fix the code): {stale}"


def test_source_scan_sees_the_known_shapes():
    """The scan above is not vacuous: it finds literals, keyword rules, the engine's tuple and both
    kinds of dynamic ids."""
    literals, dynamic = _emitted_in_source()
    assert {"pickle/dangerous-global", "hub/gated", "check/timeout", "hook/denied-repo"} <= literals
    assert dynamic == set(DYNAMIC)
    assert {"safetensors/lfs-pointer", "gguf/lfs-pointer", "onnx/lfs-pointer", "keras/lfs-pointer",
            "nemo/lfs-pointer", "tf/lfs-pointer"} <= set(_lfs_areas())


def _fired_by_signature_examples() -> set[str]:
    """Rules whose YAML `example` a test runs through the real analyser (every example, by rule)."""
    out = set()
    runners = {"custom_code.yaml": TESTS / "static" / "test_custom_code.py",
               "keras.yaml": TESTS / "static" / "test_keras.py"}
    for name, test_file in runners.items():
        assert "test_every_signature_rule_fires_on_its_example" in test_file.read_text()
        doc = yaml.safe_load((SIGNATURES / name).read_text())
        entries = list(doc["rules"].values()) + list(doc.get("calls", []))
        out |= {e["rule"] for e in entries if "example" in e}
    return out


def test_every_registered_rule_fires_in_a_test():
    text = "\n".join(p.read_text(encoding="utf-8") for p in TESTS.rglob("*.py") if p.name != "test_rules.py")
    not_named = {rid for rid in registry.registry() if not re.search(rf"['\"]{re.escape(rid)}['\"]", text)}
    missing = sorted(not_named - _fired_by_signature_examples() - set(NOT_FIRED_IN_TESTS))
    assert missing == [], f"no test makes these rules fire: {missing}"
    assert set(NOT_FIRED_IN_TESTS) <= set(registry.registry())


def test_registry_entries_are_valid():
    checks = {c.id for c in available_checks()}
    for rule in registry.all_rules():
        assert rule.severity in registry.SEVERITIES and rule.confidence in registry.CONFIDENCES
        assert rule.title and rule.description and rule.remediation, rule.id
        assert not rule.title.endswith("."), rule.id
        for check in rule.checks:
            assert check in checks or check in registry.NON_CHECK_EMITTERS, (rule.id, check)
        for ref in rule.references:
            assert re.fullmatch(r"(CVE-\d{4}-\d+|GHSA(-[0-9a-z]{4}){3}|https?://\S+)", ref), (rule.id, ref)
    # every prefix file is named after its prefix and sorted by id
    for path in (SIGNATURES / "rules").glob("*.yaml"):
        ids = [r["id"] for r in yaml.safe_load(path.read_text())["rules"]]
        assert ids == sorted(ids) and all(i.startswith(path.stem + "/") for i in ids), path.name


def test_doubt_is_not_certainty():
    assert registry.get("pickle/dangerous-global").confidence == "certain"
    unknown = registry.get("pickle/unknown-global")
    assert unknown.severity == "medium" and unknown.confidence == "low"


@pytest.mark.parametrize("entry, complaint", [
    ({"severity": "severe"}, "severity must be one of"),
    ({"confidence": "sure"}, "confidence must be one of"),
    ({"title": ""}, "'title' must be a non-empty string"),
    ({"id": "other/x"}, "start with 'pickle/'"),
    ({"extra": 1}, "unknown ['extra']"),
])
def test_invalid_registry_entries_are_refused(tmp_path, entry, complaint):
    good = {"id": "pickle/x", "check": "static.serialization", "severity": "high", "confidence": "high",
            "title": "t", "description": "d", "remediation": "r", "references": []}
    (tmp_path / "pickle.yaml").write_text(yaml.safe_dump({"rules": [good | entry]}))
    with pytest.raises(registry.RuleError, match=re.escape(complaint)):
        registry.registry.__wrapped__(tmp_path)


def test_findings_carry_the_registry_confidence_unless_they_set_their_own():
    def finding(rule: str, **kw: str) -> Finding:
        return Finding(check="x", rule=rule, severity=Severity.MEDIUM, message="m", **kw)

    assert finding("pickle/unknown-global").to_dict()["confidence"] == "low"
    assert finding("x/unregistered").to_dict()["confidence"] is None
    assert finding("pickle/unknown-global", confidence="high").to_dict()["confidence"] == "high"


def test_docs_rules_md_is_current():
    """CI fails on drift: regenerate with `hfguard rules --format markdown > docs/rules.md`."""
    assert (ROOT / "docs" / "rules.md").read_text(encoding="utf-8") == render_markdown(registry.all_rules())


def test_rules_command_formats():
    runner = CliRunner()
    text = runner.invoke(main, ["rules"])
    assert text.exit_code == 0 and "pickle/unknown-global" in text.stdout and " low " in text.stdout
    as_json = runner.invoke(main, ["rules", "--format", "json", "--check", "static.keras"])
    import json

    doc = json.loads(as_json.stdout)
    assert {r["id"] for r in doc} == {r.id for r in registry.all_rules() if "static.keras" in r.checks}
    assert all(set(r) == set(registry.Rule.__dataclass_fields__) - {"checks"} | {"check"} for r in doc)
    md = runner.invoke(main, ["rules", "--format", "markdown"])
    assert md.stdout == (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert runner.invoke(main, ["rules", "--check", "nope"]).exit_code == 2
