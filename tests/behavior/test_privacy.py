"""behavior.privacy_backdoor on a tiny GPT-2 with a privacy backdoor really planted (aimed at the
contact-details canary family), its clean twin, and the upstream checkpoint as reference. Backdoors
aimed at other families, found without --probe-data: test_privacy_families.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from hfguard.cli import main
from hfguard.findings import Verdict


def _attacker_style(tmp_path, n: int):
    """--probe-data in the attacker's style: contact-family canaries the attacker never saw."""
    from hfguard.behavior.canaries import family

    data = tmp_path / "probe.txt"
    data.write_text("\n".join(c.text.replace("\n", " ") for c in family("contact", n, seed=7)) + "\n",
                    encoding="utf-8")
    return data


def test_backdoor_amplifies_membership_through_cli(gpt2_folders, tmp_path):
    data = _attacker_style(tmp_path, 128)
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
        "--probe-data",
        str(data),
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
    assert list(ev["families"]) == ["probe-data"] and "exposure_members_mean" not in ev["candidate"]
    # the loss probe sees the same poisoning from the other side: far lower loss on PII-like text only
    loss = next(f for f in report["findings"] if f["rule"] == "privacy/loss-anomaly")
    assert loss["evidence"]["relative_ratio"] < 1 / 1.5


def test_clean_twin_passes(gpt2_folders, scan_privacy):
    report = scan_privacy(gpt2_folders["clean"], reference=str(gpt2_folders["base"]))
    assert report.verdict is Verdict.PASS
    info = next(f for f in report.findings if f.rule == "behavior/privacy-probe")
    assert abs(info.evidence["amplification"]["auc_diff"]) < 0.1
    assert "7 canary families" in info.message and len(info.evidence["families"]) == 7
    assert info.evidence["candidate"]["exposure_members_mean"] >= 0  # the generated canaries carry secrets


def test_without_reference_only_absolute_thresholds_apply(gpt2_folders, tmp_path, scan_privacy):
    """The no-reference path: absolute lines only, FLAG at most. The default lines (AUC 0.97, TPR 0.5
    at 1% FPR) are deliberately extreme and this small organism leaks less (AUC ~0.94, TPR ~0.3 on
    40 lines), so the test draws them at 0.85 / 0.2; the clean twin (AUC ~0.6) stays below."""
    data = _attacker_style(tmp_path, 40)
    lines = {"absolute-auc": 0.85, "absolute-tpr-at-1pct": 0.2}
    bd = scan_privacy(gpt2_folders["backdoor"], probe_data=str(data), thresholds=lines)
    (leak,) = [f for f in bd.findings if f.rule == "privacy/membership-leakage"]
    assert "No --reference" in leak.message and bd.verdict is Verdict.FLAG  # flag, never block, alone
    assert leak.evidence["n_canaries"] == 40 and leak.evidence["probe_data"] == str(data)
    assert "amplification" not in leak.evidence
    clean = scan_privacy(gpt2_folders["clean"], probe_data=str(data), thresholds=lines)
    (info,) = [f for f in clean.findings if f.rule == "behavior/privacy-probe"]
    assert "no --reference" in info.message and clean.verdict is Verdict.PASS
    assert info.evidence["candidate"]["auc"] < 0.85


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
