"""Report model, policy, engine and CLI plumbing, with checks defined here."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hfguard.checks import Check, ScanContext
from hfguard.cli import main
from hfguard.engine import scan
from hfguard.findings import Finding, Observation, Severity, Verdict
from hfguard.policy import Policy, PolicyError, load_policy, policy_from_mapping
from hfguard.report.sarif import to_sarif
from hfguard.sniff import sniff
from hfguard.target import local_target


class MarkerCheck(Check):
    """Reports a finding for every file whose content contains a marker word."""

    id = "test.marker"
    version = "1"

    def applies_to(self, file, fmt):
        return True

    def check_file(self, file, fmt, ctx: ScanContext):
        data = file.open().read()
        for word, sev in ((b"EVIL", Severity.CRITICAL), (b"ODD", Severity.MEDIUM)):
            if word in data:
                yield self.finding(f"marker/{word.decode().lower()}", sev, "marker found",
                                   file=file.path, location=f"offset {data.index(word)}")


class CrashingCheck(Check):
    id = "test.crash"

    def applies_to(self, file, fmt):
        return True

    def check_file(self, file, fmt, ctx):
        raise ValueError("boom")


def _tree(tmp_path, files):
    for rel, data in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return tmp_path


def test_verdicts_follow_policy_thresholds(tmp_path):
    root = _tree(tmp_path, {"a.bin": b"ok", "sub/b.bin": b"EVIL", "c.bin": b"ODD"})
    report = scan(local_target([str(root)]), Policy(), [MarkerCheck()])
    by_path = {f.path.rsplit("/", 2)[-1]: f.verdict for f in report.files}
    assert by_path == {"a.bin": Verdict.PASS, "b.bin": Verdict.BLOCK, "c.bin": Verdict.FLAG}
    assert report.verdict is Verdict.BLOCK
    # paths are the given path joined with the relative path inside the directory
    assert f"{root}/sub/b.bin" in {f.path for f in report.files}

    lenient = Policy(block_at=Severity.CRITICAL, flag_at=Severity.CRITICAL)
    report = scan(local_target([str(root / "c.bin")]), lenient, [MarkerCheck()])
    assert report.verdict is Verdict.PASS


def test_crashing_check_is_an_error_never_a_pass(tmp_path):
    root = _tree(tmp_path, {"a.bin": b"harmless"})
    report = scan(local_target([str(root)]), Policy(), [CrashingCheck()])
    [finding] = report.all_findings()
    assert finding.error and finding.rule == "check/crashed" and "boom" in finding.message
    assert report.verdict is Verdict.ERROR
    # a known threat outranks missing evidence
    _tree(tmp_path, {"b.bin": b"EVIL"})
    report = scan(local_target([str(root)]), Policy(), [CrashingCheck(), MarkerCheck()])
    assert report.verdict is Verdict.BLOCK


def test_no_files_or_no_checks_is_an_error(tmp_path):
    assert scan(local_target([str(tmp_path)]), Policy(), [MarkerCheck()]).verdict is Verdict.ERROR
    _tree(tmp_path, {"a.bin": b"x"})
    assert scan(local_target([str(tmp_path)]), Policy(), []).verdict is Verdict.ERROR


def test_baseline_and_ignore_rules_suppress_but_never_errors(tmp_path):
    root = _tree(tmp_path, {"b.bin": b"EVIL"})
    report = scan(local_target([str(root)]), Policy(), [MarkerCheck()])
    fp = report.all_findings()[0].fingerprint()
    assert scan(local_target([str(root)]), Policy(baseline=frozenset({fp})),
                [MarkerCheck()]).verdict is Verdict.PASS
    assert scan(local_target([str(root)]), Policy(ignore_rules=frozenset({"check/crashed"})),
                [CrashingCheck()]).verdict is Verdict.ERROR


def test_policy_from_pyproject_and_hfguard_toml(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.hfguard]\nblock-at = "critical"\nfail-on = "block"\ntiers = ["static", "weights"]\n'
        '[tool.hfguard.severity]\n"marker/odd" = "high"\n')
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    policy = load_policy(start=nested)
    assert policy.block_at is Severity.CRITICAL and policy.fail_on is Verdict.BLOCK
    assert policy.tiers == ("static", "weights")
    f = Finding(check="x", rule="marker/odd", severity=Severity.MEDIUM, message="m")
    assert policy.effective_severity(f) is Severity.HIGH
    (nested / "hfguard.toml").write_text('fail-on = "never"\n')
    assert load_policy(start=nested).fail_on is None
    with pytest.raises(PolicyError, match="unknown keys"):
        policy_from_mapping({"blok-at": "high"})
    with pytest.raises(PolicyError, match="unknown tiers"):
        policy_from_mapping({"tiers": ["magic"]})


@pytest.mark.parametrize("head,expected", [
    (b"PK\x03\x04rest", "zip"),
    (b"\x80\x04\x95\x10\x00", "pickle"),
    (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02", "torch-legacy"),
    (b"\x93NUMPY\x01\x00", "numpy"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\"", "safetensors"),
    (b"\x1f\x8b\x08\x00", "gzip"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"import os\n", "text"),
])
def test_sniff_uses_content_not_extension(head, expected):
    assert sniff(head, name="model.bin", size=10_000) == expected


def test_cli_json_sarif_and_exit_codes(tmp_path, monkeypatch):
    import hfguard.checks as checks_mod

    monkeypatch.setattr(checks_mod, "BUILTIN_CHECKS", (("static", "tests.test_foundation:MarkerCheck"),))
    root = _tree(tmp_path, {"m/ok.bin": b"fine", "m/bad.bin": b"xxEVIL"})
    runner = CliRunner()
    given = str(root / "m")
    res = runner.invoke(main, ["scan", given, "--format", "json", "-q"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "BLOCK"
    assert {f["path"]: f["verdict"] for f in doc["files"]} == {
        f"{given}/bad.bin": "BLOCK", f"{given}/ok.bin": "PASS"}
    assert doc["files"][0]["findings"][0]["location"] == "offset 2"

    res = runner.invoke(main, ["scan", given, "--format", "sarif", "-q", "--fail-on", "never"])
    assert res.exit_code == 0
    sarif = json.loads(res.stdout)
    run = sarif["runs"][0]
    assert sarif["version"] == "2.1.0"
    assert run["tool"]["driver"]["rules"][0]["properties"]["security-severity"] == "9.5"
    assert run["results"][0]["ruleId"] == "marker/evil"
    assert run["results"][0]["partialFingerprints"]

    res = runner.invoke(main, ["scan", str(root / "m" / "ok.bin"), "-q"])
    assert res.exit_code == 0 and "PASS" in res.stdout
    res = runner.invoke(main, ["scan", str(root / "missing"), "-q"])
    assert res.exit_code == 2


def test_sarif_rule_severity_is_the_worst_seen():
    from hfguard.findings import FileReport, Report

    fr = FileReport(path="a", format="pickle", size=1, findings=[
        Finding(check="c", rule="r/x", severity=Severity.LOW, message="m", file="a"),
        Finding(check="c", rule="r/x", severity=Severity.HIGH, message="m", file="a", location="1")])
    sarif = to_sarif(Report(target="t", source="local", files=[fr]), Policy())
    assert sarif["runs"][0]["tool"]["driver"]["rules"][0]["properties"]["security-severity"] == "8.0"


def test_findings_from_rates_unrated_observations_and_copies_evidence():
    check = MarkerCheck()
    rated = Observation("marker/a", Severity.LOW, "rated", "offset 3", {"n": 1})
    unrated = Observation("marker/b", None, "unrated")
    rules = {"marker/a": Severity.CRITICAL, "marker/b": Severity.HIGH}
    fs = list(check.findings_from([rated, unrated], file="f", remediation={"marker/b": "fix b"}.get,
                                  severity_of=rules.__getitem__))
    assert [(f.check, f.rule, f.severity, f.location, f.file, f.remediation) for f in fs] == [
        ("test.marker", "marker/a", Severity.LOW, "offset 3", "f", None),     # its own severity wins
        ("test.marker", "marker/b", Severity.HIGH, None, "f", "fix b")]
    fs[0].evidence["n"] = 2
    assert rated.evidence == {"n": 1}
    [err] = check.findings_from([rated], remediation="one text", error=True)
    assert err.error and err.remediation == "one text"
    with pytest.raises(ValueError, match="marker/b"):
        list(check.findings_from([unrated]))


def test_readme_policy_example_loads_verbatim_from_both_files(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[tool.hfguard]" in b)
    policies = []
    for name in ("pyproject.toml", "hfguard.toml"):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        (folder / name).write_text(block, encoding="utf-8")
        policies.append(load_policy(start=folder))
    pyproject, standalone = policies
    assert pyproject.source.endswith("pyproject.toml") and standalone.source.endswith("hfguard.toml")
    pyproject.source = standalone.source = None
    assert pyproject == standalone and pyproject.severity_overrides   # the table was read, not skipped
    (tmp_path / "hfguard" / "hfguard.toml").write_text('tiers = ["static"]\n' + block)
    with pytest.raises(PolicyError, match=r"\[tool.hfguard\]"):
        load_policy(start=tmp_path / "hfguard")
