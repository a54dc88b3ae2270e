"""hfguard.lock is written by a TOML library: findings quoting hostile model data (control
characters, DEL, quotes, backslashes, newlines, markup, bidi) round-trip exactly, and later hook
runs read the lock instead of failing with exit 2 (issue 11)."""

from __future__ import annotations

import hashlib
import re
import tomllib

from click.testing import CliRunner

from hfguard.cli import main
from hfguard.findings import Finding, Report, Severity
from hfguard.hooks.lockfile import Lockfile, current_stamp, entry_from_report, load_lock
from hfguard.policy import Policy

HOSTILE = ["".join(map(chr, range(0x00, 0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0))),
           'quote " single \' triple """ \'\'\' backslash \\ \\u0041 \\n',
           "line\nhfguard x: PASS\r\n[/bold] evil[/]mod [[model]] = 1 # not a comment",
           "modèle 模型 \u202etxt.exe \u2066 \u2028 \U0001f600", "=\t[x]\n[[model.finding]]"]
SHA = hashlib.sha1(b"m").hexdigest()


def _entry(policy: Policy):
    findings = [Finding(check="static.serialization", rule="pickle/dangerous-global",
                        severity=Severity.CRITICAL, message=m, file=f"dir/{m[:20]}.pkl", location=m)
                for m in HOSTILE]
    report = Report(target="acme/evil", source="hub", revision=SHA, findings=findings)
    return entry_from_report("acme/evil", SHA, report, policy, current_stamp(policy))


def test_hostile_strings_round_trip(tmp_path):
    lock = Lockfile(tmp_path / "hfguard.lock")
    lock.put(_entry(Policy()))
    lock.save()
    text = (tmp_path / "hfguard.lock").read_text(encoding="utf-8")
    tomllib.loads(text)   # valid TOML
    # nothing a terminal or a diff viewer would act on is written raw (newlines end lines, tabs stay)
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]", text)
    back = load_lock(tmp_path / "hfguard.lock").get("acme/evil", SHA)
    assert back is not None
    assert sorted(f.message for f in back.to_findings()) == sorted(HOSTILE)
    assert sorted(f.location for f in back.to_findings()) == sorted(HOSTILE)
    assert lock.dumps() == load_lock(tmp_path / "hfguard.lock").dumps()   # same bytes again


def test_undecodable_file_names_are_written_as_replacement_characters(tmp_path):
    policy = Policy()
    report = Report(target="acme/evil", source="hub", revision=SHA, findings=[Finding(
        check="static.serialization", rule="pickle/dangerous-global", severity=Severity.CRITICAL,
        message="bad name", file="w\udcff.pkl")])
    lock = Lockfile(tmp_path / "hfguard.lock")
    lock.put(entry_from_report("acme/evil", SHA, report, policy, current_stamp(policy)))
    lock.save()
    assert load_lock(tmp_path / "hfguard.lock").get("acme/evil", SHA).findings[0]["file"] == "w\ufffd.pkl"


def test_hook_runs_after_a_hostile_lock_read_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lock = Lockfile(tmp_path / "hfguard.lock")
    lock.put(_entry(Policy()))
    lock.save()
    (tmp_path / "train.py").write_text("from transformers import AutoModel\n"
                                       f'm = AutoModel.from_pretrained("acme/evil", revision="{SHA}")\n')
    for _ in range(2):
        res = CliRunner().invoke(main, ["hook", "refs", "-q", "train.py"])
        assert res.exit_code == 1, res.output                 # BLOCK from the lock, not exit 2
        assert "pickle/dangerous-global" in res.output and "hook/not-locked" not in res.output
        assert "\x7f" not in res.output and "\x1b" not in res.output
