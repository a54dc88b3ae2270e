"""Lockfile, policy decisions and finding placement of the references hook (no Hub needed here:
deny lists, lock entries and offline mode never touch the network; the Hub side is exercised in
test_end_to_end.py)."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from hfguard.cli import main
from hfguard.findings import Finding, Report, Severity, Verdict
from hfguard.hooks.lockfile import (
    LockError,
    Lockfile,
    Stamp,
    current_stamp,
    entry_from_report,
    load_lock,
)
from hfguard.hooks.precommit import vet_references
from hfguard.hooks.refs import extract
from hfguard.policy import Policy

SHA_A = "a" * 40
SHA_B = "b" * 40


class RecordingVet:
    """Stands in for the Hub in plumbing tests: returns prepared reports, records every call."""

    def __init__(self, findings_by_repo: dict[str, list[Finding]]):
        self.findings_by_repo = findings_by_repo
        self.calls: list[tuple[str, str | None]] = []

    def __call__(self, repo, revision, policy):
        from hfguard.engine import finalize

        self.calls.append((repo, revision))
        report = Report(target=repo, source="hub", revision=revision if revision and len(revision) == 40
                        else SHA_A, findings=list(self.findings_by_repo.get(repo, [])))
        finalize(report, policy)
        return report


def _pickle_finding(sev=Severity.CRITICAL):
    return Finding(check="pickle", rule="pickle/dangerous-global", severity=sev,
                   message="os.system called on load", file="pytorch_model.bin", location="opcode 12")


def _src(tmp_path, text, name="train.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def test_model_findings_land_on_the_source_line(tmp_path):
    p = _src(tmp_path, f'''
        from transformers import AutoModel
        a = AutoModel.from_pretrained("evil/model")
        b = AutoModel.from_pretrained("good/model", revision="{SHA_B}")
        c = AutoModel.from_pretrained("evil/model")  # hfguard: ignore[pickle/dangerous-global]
    ''')
    vet = RecordingVet({"evil/model": [_pickle_finding()]})
    refs = extract([p]).references
    result = vet_references(refs, Policy(), Lockfile(tmp_path / "hfguard.lock"), vet=vet)
    report = result.report
    assert report.verdict is Verdict.BLOCK
    # one vetting per (repo, revision as written), however many lines name it
    assert sorted(vet.calls) == [("evil/model", None), ("good/model", SHA_B)]
    by = {(f.rule, f.location) for f in report.findings}
    assert ("pickle/dangerous-global", "line 2") in by
    assert ("pickle/dangerous-global", "line 4") not in by      # suppressed inline
    assert ("hook/unpinned-reference", "line 2") in by
    assert ("hook/unpinned-reference", "line 3") not in by      # pinned to a sha
    blocked = next(f for f in report.findings if f.rule == "pickle/dangerous-global")
    assert blocked.file == str(p) and "evil/model" in blocked.message and "os.system" in blocked.message
    assert blocked.evidence["model_file"] == "pytorch_model.bin"
    assert blocked.severity is Severity.CRITICAL
    assert {e.repo for e in result.vetted} == {"evil/model", "good/model"}


def test_deny_blocks_without_network_and_allow_downgrades_flags(tmp_path):
    p = _src(tmp_path, '''
        from transformers import AutoModel
        a = AutoModel.from_pretrained("evil-org/anything")
        b = AutoModel.from_pretrained("trusted/flagged")
        c = AutoModel.from_pretrained("trusted/blocked")
    ''')
    vet = RecordingVet({"trusted/flagged": [_pickle_finding(Severity.MEDIUM)],
                        "trusted/blocked": [_pickle_finding(Severity.HIGH)]})
    policy = Policy(deny=("evil-org",), allow=("trusted/*",))
    refs = extract([p]).references
    report = vet_references(refs, policy, Lockfile(tmp_path / "l"), vet=vet).report
    assert ("evil-org/anything", None) not in vet.calls
    rules = {(f.rule, f.location): f for f in report.findings}
    assert rules[("hook/denied-repo", "line 2")].severity is Severity.CRITICAL
    assert rules[("pickle/dangerous-global", "line 3")].severity is Severity.INFO  # FLAG -> PASS
    assert rules[("pickle/dangerous-global", "line 4")].severity is Severity.HIGH  # BLOCK stands
    only_flagged = vet_references([r for r in refs if r.repo_id == "trusted/flagged"], policy,
                                  Lockfile(tmp_path / "l"), vet=vet).report
    assert only_flagged.verdict is Verdict.PASS


def test_lock_roundtrip_is_deterministic_and_needs_no_network(tmp_path):
    p = _src(tmp_path, f'''
        from transformers import AutoModel
        a = AutoModel.from_pretrained("flag/model")
        b = AutoModel.from_pretrained("ok/model@{SHA_B}")
    ''')
    policy = Policy()
    stamp = current_stamp(policy)
    vet = RecordingVet({"flag/model": [_pickle_finding(Severity.MEDIUM)]})
    refs = extract([p]).references
    lock = Lockfile(tmp_path / "hfguard.lock")
    first = vet_references(refs, policy, lock, vet=vet, stamp=stamp)
    for e in first.vetted:
        lock.put(e)
    lock.save()
    text = lock.path.read_text()
    assert load_lock(lock.path).dumps() == text                # stable bytes
    assert text.index('repo = "flag/model"') < text.index('repo = "ok/model"')

    # offline, lock current: same verdict and findings, and the Hub is never asked
    never = RecordingVet({})
    again = vet_references(refs, policy, load_lock(lock.path), vet=never, offline=True, stamp=stamp)
    assert never.calls == [] and not again.stale
    assert again.report.verdict is first.report.verdict is Verdict.FLAG
    assert {(f.rule, f.location) for f in again.report.findings} == \
        {(f.rule, f.location) for f in first.report.findings}
    unpinned = next(f for f in again.report.findings if f.rule == "hook/unpinned-reference")
    assert SHA_A in unpinned.message  # the locked sha is named

    # a changed stamp (new check version, other policy) makes entries stale: offline -> ERROR
    newer = Stamp(stamp.tiers, (*stamp.checks, "new.check@1"), stamp.signatures, stamp.policy)
    stale = vet_references(refs, policy, load_lock(lock.path), vet=never, offline=True, stamp=newer)
    assert stale.report.verdict is Verdict.ERROR and len(stale.stale) == 2
    assert {f.rule for f in stale.report.findings} == {"hook/not-locked"}
    assert never.calls == []


def test_deeper_tier_inputs_are_part_of_the_stamp(tmp_path):
    """A verdict vetted with --base / --probe-data is not reused without them, or with other data
    (--device alone changes nothing); the inputs are written to the lock and read back."""
    p = _src(tmp_path, '''
        from transformers import AutoModel
        a = AutoModel.from_pretrained("flag/model")
    ''')
    probe = tmp_path / "probe.txt"
    probe.write_text("my secret canary 1\n")
    policy, refs = Policy(), extract([p]).references
    lock = Lockfile(tmp_path / "hfguard.lock")
    vet = RecordingVet({"flag/model": [_pickle_finding(Severity.MEDIUM)]})
    with_inputs = {"base": "org/base@" + SHA_B, "probe_data": str(probe), "device": "auto"}
    for e in vet_references(refs, policy, lock, vet=vet, options=with_inputs).vetted:
        lock.put(e)
    lock.save()
    assert "options = " in lock.path.read_text()
    loaded = load_lock(lock.path)

    never = RecordingVet({})
    def offline(options):
        return vet_references(refs, policy, loaded, vet=never, offline=True, options=options)
    assert not offline({**with_inputs, "device": "cpu"}).stale      # where it runs: same verdict
    assert len(offline({"device": "auto"}).stale) == 1               # without the base model
    probe.write_text("another canary\n")
    assert len(offline(with_inputs).stale) == 1                      # other probe data
    assert never.calls == []
    assert current_stamp(policy, {"device": "cuda"}) == current_stamp(policy)


def test_a_baseline_survives_lines_added_above(tmp_path):
    """Hook findings sit on source lines but are fingerprinted by the model they are about."""
    p = _src(tmp_path, '''
        from transformers import AutoModel
        a = AutoModel.from_pretrained("flag/model")
        b = AutoModel.from_pretrained("legacy")
    ''')
    vet = RecordingVet({"flag/model": [_pickle_finding(Severity.MEDIUM)]})
    first = vet_references(extract([p]).references, Policy(), None, vet=vet).report
    assert first.verdict is Verdict.FLAG
    accepted = frozenset(f.fingerprint() for f in first.findings if f.severity > Severity.INFO)
    assert {f.rule for f in first.findings if f.fingerprint() in accepted} >= {
        "pickle/dangerous-global", "hook/unpinned-reference", "hook/unqualified-reference"}
    p.write_text("import os\n\n\n" + p.read_text())
    second = vet_references(extract([p]).references, Policy(baseline=accepted), None, vet=vet).report
    assert {f.location for f in second.findings} == {"line 5", "line 6"}   # they moved
    assert second.verdict is Verdict.PASS
    other = _src(tmp_path, 'from transformers import AutoModel\nAutoModel.from_pretrained("flag/model")\n',
                 name="other.py")   # the same model named in another file is not accepted there
    third = vet_references(extract([other]).references, Policy(baseline=accepted), None, vet=vet).report
    assert third.verdict is Verdict.FLAG


def test_lock_entries_keep_what_counts(tmp_path):
    report = Report(target="x/y", source="hub", revision=SHA_A, findings=[
        _pickle_finding(),
        Finding(check="prov", rule="prov/info", severity=Severity.INFO, message="fine"),
        Finding(check="prov", rule="prov/baselined", severity=Severity.HIGH, message="accepted")])
    baselined = report.findings[2].fingerprint()
    policy = Policy(baseline=frozenset({baselined}))
    entry = entry_from_report("x/y", None, report, policy, current_stamp(policy))
    assert [f["rule"] for f in entry.findings] == ["pickle/dangerous-global"]
    with pytest.raises(LockError):
        entry_from_report("x/y", None, Report(target="x/y", source="hub"), policy, current_stamp(policy))
    bad = tmp_path / "hfguard.lock"
    bad.write_text("version = 99\n")
    with pytest.raises(LockError):
        load_lock(bad)


def test_cli_hook_refs_offline_uses_lock_and_reports_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hfguard.toml").write_text('deny = ["evil-org"]\n')
    _src(tmp_path, f'''
        from transformers import AutoModel
        a = AutoModel.from_pretrained("locked/model", revision="{SHA_B}")
    ''')
    _src(tmp_path, "lr: 0.1\nmodel_id: evil-org/thing\n", name="cfg.yaml")
    from hfguard.policy import load_policy

    policy = load_policy()
    report = Report(target="locked/model", source="hub", revision=SHA_B)
    lock = Lockfile(tmp_path / "hfguard.lock")
    lock.put(entry_from_report("locked/model", SHA_B, report, policy, current_stamp(policy)))
    lock.save()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()
    res = runner.invoke(main, ["hook", "refs", "train.py", "-q", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["verdict"] == "PASS"
    res = runner.invoke(main, ["hook", "refs", "train.py", "cfg.yaml", "-q", "--format", "sarif"])
    assert res.exit_code == 1
    [result] = json.loads(res.stdout)["runs"][0]["results"]
    assert result["ruleId"] == "hook/denied-repo"
    loc = result["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "cfg.yaml" and loc["region"]["startLine"] == 2
    # not locked and offline: ERROR (exit 2), never a pass
    _src(tmp_path, 'import transformers\ntransformers.AutoModel.from_pretrained("new/model")\n', "b.py")
    res = runner.invoke(main, ["hook", "refs", "b.py", "-q"])
    assert res.exit_code == 2 and "hook/not-locked" in res.stdout
    res = runner.invoke(main, ["lock", "--check", "-q"])
    assert res.exit_code == 1 and "b.py:2: new/model has no current entry" in res.output
    res = runner.invoke(main, ["lock", "--check", "-q", "--format", "json"])
    doc = json.loads(res.stdout)  # the denied repo in cfg.yaml outranks the missing entry
    assert res.exit_code == 1 and doc["verdict"] == "BLOCK"
    assert {f["rule"] for f in doc["findings"]} >= {"hook/not-locked", "hook/denied-repo"}
    assert runner.invoke(main, ["hook", "refs", "-q"]).exit_code == 0  # no files: nothing to do


def test_cli_hook_files_scans_only_model_files(tmp_path, monkeypatch):
    import pickle

    from testing.pickles import evil_pickle

    monkeypatch.chdir(tmp_path)
    mark = tmp_path / "mark"
    (tmp_path / "evil.pt").write_bytes(evil_pickle(mark))
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    (tmp_path / "notes.txt").write_text("Notes: load ok.pkl with care.\n")   # text: not a model file
    runner = CliRunner()
    res = runner.invoke(main, ["hook", "files", "-q", "--format", "json", "ok.pkl", "notes.txt"])
    assert res.exit_code == 0, res.output
    assert [f["path"] for f in json.loads(res.stdout)["files"]] == ["ok.pkl"]
    res = runner.invoke(main, ["hook", "files", "-q", "--format", "json", "ok.pkl", "evil.pt"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "BLOCK"
    assert {f["path"]: f["verdict"] for f in doc["files"]} == {"ok.pkl": "PASS", "evil.pt": "BLOCK"}
    assert runner.invoke(main, ["hook", "files", "-q"]).exit_code == 0
    assert not mark.exists()


def test_refs_hook_update_lock_records_new_verdicts_and_owner_less_names(tmp_path):
    from hfguard.hooks.precommit import refs_hook

    p = _src(tmp_path, '''
        from transformers import AutoModel
        a = AutoModel.from_pretrained("flag/model")
        b = AutoModel.from_pretrained("gpt2")
    ''')
    vet = RecordingVet({"flag/model": [_pickle_finding(Severity.MEDIUM)]})
    lock = Lockfile(tmp_path / "hfguard.lock")
    report = refs_hook([str(p)], Policy(), lock, update_lock=True, vet=vet)
    assert vet.calls == [("flag/model", None)]  # "gpt2" is not sent to the Hub
    assert ("hook/unqualified-reference", "line 3") in {(f.rule, f.location) for f in report.findings}
    assert report.verdict is Verdict.FLAG
    assert load_lock(lock.path).get("flag/model", None).verdict == "FLAG"


def test_error_verdicts_are_never_locked(tmp_path):
    p = _src(tmp_path, 'import transformers\ntransformers.AutoModel.from_pretrained("flaky/model")\n')
    crashed = Finding(check="static.serialization", rule="check/crashed", severity=Severity.HIGH,
                      message="boom", file="model.bin", error=True)
    result = vet_references(extract([p]).references, Policy(), Lockfile(tmp_path / "l"),
                            vet=RecordingVet({"flaky/model": [crashed]}))
    assert result.report.verdict is Verdict.ERROR and result.vetted == []
