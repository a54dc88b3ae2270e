"""Privacy backdoors aimed at one canary family (Wen et al.'s loss minimisation and maximisation on
the attacker's own samples of that family) are found by the default canary mixture, without
--probe-data, and the finding names the family; the clean twin passes (test_privacy.py). The
multi-seed sweep covers every family of testing.organisms.PRIVACY_TARGETS (`pytest -m sweep`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from hfguard.findings import Verdict
from tests.behavior.conftest import FAST_PRIVACY_TARGETS

FLAG_RULES = ("privacy/membership-amplification", "privacy/loss-anomaly")


def _named(flags) -> set[str]:
    """The families the flagging findings name first (each finding's worst)."""
    return {next(iter(f.evidence["leaking"])) for f in flags}


def test_holm_correction_keeps_false_alarms_across_families_at_alpha():
    from hfguard.behavior import stats

    # Holm's step-down worked by hand: sorted 0.005*4, 0.01*3, 0.03*2, 0.04*1 -> monotone maximum
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    # 8 null tests (pooled + 7 families): any false alarm at most alpha, where raw p-values give ~34%
    rng = np.random.default_rng(0)
    p = rng.uniform(size=(4000, 8))
    holm_any = np.mean([min(stats.holm(row)) <= 0.05 for row in p])
    assert holm_any <= 0.06 and np.mean(p.min(axis=1) <= 0.05) > 0.3


@pytest.mark.slow
@pytest.mark.parametrize(("family", "mode"), FAST_PRIVACY_TARGETS)
def test_a_backdoor_aimed_at_one_family_is_caught_and_named(gpt2_folders, scan_privacy, family, mode):
    report = scan_privacy(gpt2_folders[f"{family}/{mode}"], reference=str(gpt2_folders["base"]))
    assert report.verdict in (Verdict.FLAG, Verdict.BLOCK), [f.message for f in report.findings]
    flags = [f for f in report.findings if f.rule in FLAG_RULES]
    assert flags and family in _named(flags)
    named = next(f for f in flags if next(iter(f.evidence["leaking"])) == family)
    assert f"{family} canaries" in named.message and "Holm-adjusted over 8 tests" in named.message
    loss = next((f for f in flags if f.rule == "privacy/loss-anomaly"), None)
    if loss is not None:  # minimisation: the family's loss below the reference's; maximisation: above
        ratio = loss.evidence["families"][family]["relative_ratio"]
        assert ratio < 1 if mode == "minimize" else ratio > 1
        assert loss.evidence["leaking"][family] <= 0.01  # Holm-adjusted p
    ev = flags[0].evidence
    fams = ev["families"] if flags[0].rule == "privacy/membership-amplification" else None
    for row in (fams or {}).values():  # every per-family TPR with its exact interval (scipy as the oracle)
        t = row["candidate"]["tpr_at_1pct_fpr"]
        ci = binomtest(round(t["tpr"] * t["n_pos"]), t["n_pos"]).proportion_ci(method="exact")
        assert (t["ci_low"], t["ci_high"]) == pytest.approx((ci.low, ci.high))


@pytest.mark.sweep
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_family_target_over_calibration_seeds(char_tok, seed):
    """All of PRIVACY_TARGETS from one upstream per seed: each planted model flagged with its family
    named, the clean twin not flagged (the thresholds' calibration seeds; bench quotes 2000..)."""
    from hfguard.behavior import membership
    from hfguard.behavior.check import PrivacyBackdoorCheck
    from testing.organisms import PRIVACY_TARGETS, lm_privacy_organisms

    check = PrivacyBackdoorCheck()
    th = check.THRESHOLDS.__getitem__
    recipe = {"epochs": th("finetune-epochs"), "lr": th("finetune-lr"), "batch": th("finetune-batch")}
    orgs = lm_privacy_organisms(char_tok, seed=seed, targets=PRIVACY_TARGETS)
    items = membership.canaries(th("canaries"), seed=seed)
    missed = []
    for name in ["clean", *(f"{f}/{m}" for f, m in PRIVACY_TARGETS)]:
        res = membership.evaluate(orgs[name], char_tok, items, (orgs["base"], char_tok), seed=seed,
                                  recipe=recipe, exposure=(0, 0))
        flags = [f for f in membership.judge(check, name, res, th) if f.rule in FLAG_RULES]
        if name == "clean":
            assert not flags, [f.message for f in flags]
        elif name.split("/")[0] not in _named(flags):
            missed.append((name, [f.message for f in flags]))
    assert not missed
