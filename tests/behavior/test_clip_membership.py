"""behavior.privacy_backdoor on tiny transformers CLIPModels: image-caption canaries, the contrastive
victim fine-tune. A privacy backdoor really planted (Wen et al.'s loss minimisation on the
attacker's own image-caption canaries) is blocked through the CLI; its clean twin passes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from scipy.stats import binomtest

from hfguard.behavior.check import PrivacyBackdoorCheck
from hfguard.cli import main
from hfguard.findings import Verdict


@pytest.fixture(scope="module")
def clip_dirs(char_tok, tmp_path_factory):
    """{'base', 'backdoor', 'clean'}: the upstream tiny CLIP, its privacy-backdoored derivative and
    the clean twin (same steps, auxiliary pairs only), as safetensors folders."""
    from testing.organisms import clip_privacy_organisms, save

    root = tmp_path_factory.mktemp("clipmodel")
    return {k: save(m, char_tok, root / k) for k, m in clip_privacy_organisms(char_tok, seed=0).items()}



def test_clip_backdoor_amplifies_membership_through_cli(clip_dirs):
    args = ["scan", str(clip_dirs["backdoor"]), "--tier", "behavior", "--format", "json"]
    args += ["--reference", str(clip_dirs["base"]), "--budget", "300", "-q"]
    res = CliRunner().invoke(main, args)
    report = json.loads(res.stdout)
    assert res.exit_code == 1 and report["verdict"] == "BLOCK", res.output
    amp = next(f for f in report["findings"] if f["rule"] == "privacy/membership-amplification")
    ev = amp["evidence"]
    assert ev["modality"] == "image-text" and "synthetic images" in ev["probe_data"]
    assert ev["recipe"]["epochs"] == PrivacyBackdoorCheck.THRESHOLDS["clip-finetune-epochs"]
    a = ev["amplification"]
    assert a["auc_diff"] >= 0.1 and a["p_value"] <= 0.01 and a["ci"][0] > 0
    assert ev["candidate"]["auc"] > ev["reference"]["auc"]
    for fig in (ev["candidate"], ev["reference"]):  # every figure with its interval
        assert fig["n_members"] == fig["n_nonmembers"] == 64
        for key in ("tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):  # exact binomial intervals (scipy oracle)
            t = fig[key]
            ci = binomtest(round(t["tpr"] * t["n_pos"]), t["n_pos"]).proportion_ci(method="exact")
            assert (t["ci_low"], t["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert "exposure_members_mean" not in fig  # digit exposure is a text-only measure
    assert ev["candidate"]["tpr_at_1pct_fpr"]["tpr"] > ev["reference"]["tpr_at_1pct_fpr"]["tpr"]


def test_clip_clean_twin_passes(clip_dirs, scan_privacy):
    report = scan_privacy(clip_dirs["clean"], reference=str(clip_dirs["base"]))
    assert report.verdict is Verdict.PASS, [f.message for f in report.findings]
    (info,) = [f for f in report.findings if f.rule == "behavior/privacy-probe"]
    ev = info.evidence
    assert ev["modality"] == "image-text" and ev["n_canaries"] == 128
    assert ev["amplification"]["auc_diff"] < 0.1 or ev["amplification"]["p_value"] > 0.01
    assert ev["reference_model"] == str(clip_dirs["base"])
    assert ev["loss"]["candidate_probe_loss_median"] > 0
    assert ev["loss"]["judged"] is False  # image-text loss ratios are reported, never judged


def test_clip_canary_measurement_without_reference(clip_dirs, scan_privacy):
    report = scan_privacy(clip_dirs["base"])
    assert report.verdict is not Verdict.ERROR
    rules = {f.rule for f in report.findings}
    assert rules & {"behavior/privacy-probe", "privacy/membership-leakage"}
    assert all(f.evidence.get("modality") == "image-text" for f in report.findings if f.evidence)
    # the honest upstream, without a reference: only absolute figures apply, and it passes them
    assert report.verdict is Verdict.PASS
    (info,) = [f for f in report.findings if f.rule == "behavior/privacy-probe"]
    assert "no --reference" in info.message and "amplification" not in info.evidence
    cand = info.evidence["candidate"]
    assert cand["auc"] < 0.97 and cand["n_members"] == 64


def test_image_norm_from_either_config(tmp_path):
    from hfguard.behavior.clip_membership import CLIP_MEAN, CLIP_STD, image_norm

    assert image_norm(tmp_path) == (CLIP_MEAN, CLIP_STD)
    (tmp_path / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": {}, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}})
    )
    assert image_norm(tmp_path) == ((0.5,) * 3, (0.25,) * 3)
    bad = {"image_mean": [0.1] * 3, "image_std": [0]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(bad))
    assert image_norm(tmp_path) == ((0.5,) * 3, (0.25,) * 3)  # malformed one skipped, not trusted
