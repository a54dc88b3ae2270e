"""behavior.privacy_backdoor on a tiny transformers CLIPModel: image-caption canaries, the
contrastive victim fine-tune, figures with modality "image-text"."""

from __future__ import annotations

import pytest

from hfguard.behavior.check import PrivacyBackdoorCheck
from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.target import local_target


@pytest.fixture(scope="module")
def clip_dirs(char_tok, tmp_path_factory):
    """{'base', 'clean'}: a tiny CLIP briefly pre-trained on captions with synthetic images, and its
    clean twin (the privacy-backdoor recipe's steps with the auxiliary loss only)."""
    import random

    from hfguard.behavior.membership import canaries
    from hfguard.behavior.testing import (
        caption,
        clip_loss,
        clip_pairs,
        plant_privacy_backdoor,
        pretrain_lm,
        save,
        tiny_clip,
    )

    rng = random.Random(5)
    aux = clip_pairs([caption(rng) for _ in range(200)], seed=1000)
    target = clip_pairs([t for t, _ in canaries(100, seed=99)], seed=2000)
    base = pretrain_lm(tiny_clip(char_tok, seed=0), char_tok, aux, steps=60, loss_fn=clip_loss)
    clean = plant_privacy_backdoor(base, char_tok, aux, target, backdoor=False, steps=30, loss_fn=clip_loss)
    root = tmp_path_factory.mktemp("clipmodel")
    return {"base": save(base, char_tok, root / "base"), "clean": save(clean, char_tok, root / "clean")}


def _scan(folder, **options):
    return scan(
        local_target([str(folder)]),
        Policy(tiers=("behavior",)),
        [PrivacyBackdoorCheck()],
        options=options,
        budget_seconds=300,
    )


def test_clip_canary_measurement_with_reference(clip_dirs):
    report = _scan(clip_dirs["clean"], reference=str(clip_dirs["base"]))
    assert report.verdict is Verdict.PASS, [f.message for f in report.findings]
    (info,) = [f for f in report.findings if f.rule == "behavior/privacy-probe"]
    ev = info.evidence
    assert ev["modality"] == "image-text" and "synthetic images" in ev["probe_data"]
    assert ev["n_canaries"] == 128 and ev["candidate"]["n_members"] == 64
    for fig in (ev["candidate"], ev["reference"]):
        assert fig["auc_ci"][0] <= fig["auc"] <= fig["auc_ci"][1]
        assert "exposure_members_mean" not in fig  # digit exposure is a text-only measure
    assert abs(ev["amplification"]["auc_diff"]) < 0.1 or ev["amplification"]["p_value"] > 0.01
    assert ev["loss"]["candidate_probe_loss_median"] > 0


def test_clip_canary_measurement_without_reference(clip_dirs):
    report = _scan(clip_dirs["base"])
    assert report.verdict is not Verdict.ERROR
    rules = {f.rule for f in report.findings}
    assert rules & {"behavior/privacy-probe", "privacy/membership-leakage"}
    assert all(f.evidence.get("modality") == "image-text" for f in report.findings if f.evidence)
