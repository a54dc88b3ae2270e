"""behavior.privacy_backdoor on a tiny GPT-2 with a privacy backdoor really planted, its clean
twin, and the upstream checkpoint as reference."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from hfguard.cli import main
from hfguard.findings import Verdict


def test_backdoor_amplifies_membership_through_cli(gpt2_folders):
    args = [
        "scan",
        str(gpt2_folders["backdoor"]),
        "--tier",
        "behavior",
        "--format",
        "json",
        "--reference",
        str(gpt2_folders["base"]),
        "--budget",
        "300",
        "-q",
    ]
    res = CliRunner().invoke(main, args)
    report = json.loads(res.stdout)
    assert res.exit_code == 1 and report["verdict"] == "BLOCK", res.output
    amp = next(f for f in report["findings"] if f["rule"] == "privacy/membership-amplification")
    ev = amp["evidence"]
    assert ev["amplification"]["auc_diff"] >= 0.1 and ev["amplification"]["p_value"] <= 0.01
    assert ev["candidate"]["auc"] > ev["reference"]["auc"]
    for fig in (ev["candidate"], ev["reference"]):  # every figure with its interval
        t = fig["tpr_at_0.1pct_fpr"]
        # 64 non-members: 0.1% FPR is below the resolution, so it is a TPR at zero false positives
        assert t["resolution_limited"] and t["achieved_fpr"] == 0.0
        ci = binomtest(round(t["tpr"] * t["n_pos"]), t["n_pos"]).proportion_ci(method="exact")
        assert (t["ci_low"], t["ci_high"]) == pytest.approx((ci.low, ci.high))  # scipy as the oracle
    assert "exposure_members_mean" in ev["candidate"]
    # the loss probe sees the same poisoning from the other side: far lower loss on PII-like text only
    loss = next(f for f in report["findings"] if f["rule"] == "privacy/loss-anomaly")
    assert loss["evidence"]["relative_ratio"] < 1 / 1.5


def test_clean_twin_passes(gpt2_folders, scan_privacy):
    report = scan_privacy(gpt2_folders["clean"], reference=str(gpt2_folders["base"]))
    assert report.verdict is Verdict.PASS
    info = next(f for f in report.findings if f.rule == "behavior/privacy-probe")
    assert abs(info.evidence["amplification"]["auc_diff"]) < 0.1


def test_without_reference_only_absolute_thresholds_apply(gpt2_folders, tmp_path, scan_privacy):
    from hfguard.behavior.membership import canaries

    data = tmp_path / "probe.txt"
    data.write_text("\n".join(t for t, _ in canaries(40, seed=7)) + "\n", encoding="utf-8")
    bd = scan_privacy(gpt2_folders["backdoor"], probe_data=str(data))
    (leak,) = [f for f in bd.findings if f.rule == "privacy/membership-leakage"]
    assert "No --reference" in leak.message and bd.verdict is Verdict.FLAG  # flag, never block, alone
    assert leak.evidence["n_canaries"] == 40 and leak.evidence["probe_data"] == str(data)
    assert "amplification" not in leak.evidence
    clean = scan_privacy(gpt2_folders["clean"], probe_data=str(data))
    (info,) = [f for f in clean.findings if f.rule == "behavior/privacy-probe"]
    assert "no --reference" in info.message and clean.verdict is Verdict.PASS
    assert info.evidence["candidate"]["auc"] < 0.97


def test_text_encoders_are_not_probed_for_privacy(clip_folders, scan_privacy):
    report = scan_privacy(clip_folders["clean"])
    assert [f.rule for f in report.findings] == ["behavior/not-applicable"]
    assert report.verdict is Verdict.PASS


def test_too_little_probe_data_is_an_error_not_a_pass(gpt2_folders, tmp_path, scan_privacy):
    """An empty or tiny --probe-data file measures nothing: ERROR, before any model is loaded."""
    for lines in ([], ["one secret line", "another"]):
        data = tmp_path / "probe.txt"
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
        report = scan_privacy(gpt2_folders["clean"], probe_data=str(data))
        (err,) = [f for f in report.findings if f.rule == "behavior/insufficient-probe-data"]
        assert err.error and err.evidence["texts"] == len(lines)
        assert report.verdict is Verdict.ERROR


def test_an_unresolvable_reference_is_an_error_not_a_pass(gpt2_folders, tmp_path, scan_privacy):
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    for spec in (str(tmp_path / "missing dir"), str(empty)):
        report = scan_privacy(gpt2_folders["clean"], reference=spec)
        (err,) = [f for f in report.findings if f.rule == "behavior/unavailable"]
        assert err.error and "--reference" in err.message
        assert report.verdict is Verdict.ERROR
