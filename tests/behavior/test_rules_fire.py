"""Behavior-tier rules no other test names."""

from __future__ import annotations

from hfguard.behavior.check import HomoglyphCheck, PrivacyBackdoorCheck
from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.target import local_target


def test_no_model_folder_to_run(tmp_path):
    (tmp_path / "README.md").write_text("# notes, no model\n")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 64)
    report = scan(local_target([str(tmp_path)]), Policy(tiers=("behavior",)),
                  [HomoglyphCheck(), PrivacyBackdoorCheck()])
    no_model = [f for f in report.findings if f.rule == "behavior/no-model"]
    assert {f.check for f in no_model} == {"behavior.homoglyph", "behavior.privacy_backdoor"}
    assert report.verdict is Verdict.PASS and not any(f.error for f in no_model)
