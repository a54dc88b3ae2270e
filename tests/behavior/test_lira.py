"""Offline LiRA: the pure statistics on synthetic canaries whose truth is known, then the confirmation
inside behavior.privacy_backdoor on the tiny GPT-2 organisms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from hfguard.behavior import lira, stats


def population(n: int = 2000, k: int = 4, shift: float = 2.0, noise: float | np.ndarray = 0.5,
               spread: float = 3.0, seed: int = 0) -> dict:
    """Canaries of very different difficulty (spread), each model's confidence = difficulty + noise,
    + `shift` when the model trained on the canary. K reference models on complementary halves; the
    victim trained on the first half of the canaries."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, spread, n)
    trains = lira.out_splits(n, k, seed + 1)
    is_member = np.arange(n) < n // 2
    phi_ref = difficulty + rng.normal(0, 1, (k, n)) * noise + shift * trains
    phi_victim = difficulty + rng.normal(0, 1, n) * noise + shift * is_member
    return {"difficulty": difficulty, "trains": trains, "phi_ref": phi_ref, "phi": phi_victim,
            "is_member": is_member}


def tpr_at(scores: np.ndarray, is_member: np.ndarray, fpr: float) -> float:
    return stats.tpr_at_fpr(scores[is_member], scores[~is_member], fpr)["tpr"]


def test_lira_beats_the_uncalibrated_loss_threshold_at_low_fpr():
    p = population()
    out = lira.fit_out_distributions(p["phi_ref"], ~p["trains"])
    scores = lira.lira_scores(p["phi"], out)
    # per-canary difficulty (sd 3) swamps a shift of 2 for a global threshold; LiRA removes it.
    # Expected: ~0.57 for LiRA (shift 2 over a predictive sd of 0.61), under 0.01 for the raw score
    assert tpr_at(scores, p["is_member"], 0.001) > 0.4
    assert tpr_at(p["phi"], p["is_member"], 0.001) < 0.05
    figs = lira.low_fpr_figures(scores[p["is_member"]], scores[~p["is_member"]])
    assert figs["tpr_at_0.1pct_fpr"]["ci_low"] > 0.3 and not figs["tpr_at_0.1pct_fpr"]["resolution_limited"]
    assert figs["tpr_at_1pct_fpr"]["tpr"] >= figs["tpr_at_0.1pct_fpr"]["tpr"]


def test_only_out_observations_enter_the_fit():
    p = population()
    out = lira.fit_out_distributions(p["phi_ref"], ~p["trains"])
    assert (out.n == 2).all()  # K=4 on complementary halves: each canary OUT for exactly 2 models
    # the IN observations (shifted by 2) would bias every mean by +1 if they were used
    assert np.median(np.abs(out.mean - p["difficulty"])) < 0.4
    assert out.std[0] == pytest.approx(0.5, rel=0.06) and np.ptp(out.std) == 0  # pooled: one value
    with pytest.raises(ValueError, match="no OUT model"):
        lira.fit_out_distributions(p["phi_ref"], np.zeros_like(p["trains"]))


def test_p_values_are_uniform_for_non_members_with_two_out_models_each():
    """The score is -log p; for canaries the victim never saw, P(p < a) must be a. The predictive
    spread (the mean itself estimated from 2 models) is what makes it so: without it, 7% at a=5%."""
    p = population(n=40000, shift=0.0)
    out = lira.fit_out_distributions(p["phi_ref"], ~p["trains"])
    pvals = np.exp(-lira.lira_scores(p["phi"], out))
    for a in (0.05, 0.01):
        lo, hi = stats.clopper_pearson(int((pvals < a).sum()), len(pvals), alpha=0.001)
        assert lo <= a <= hi, (a, lo, hi)


def test_fixed_variance_wins_with_few_models_and_per_canary_variance_with_many():
    few = population(k=4)
    fixed = lira.lira_scores(few["phi"], lira.fit_out_distributions(few["phi_ref"], ~few["trains"]))
    per = lira.lira_scores(few["phi"], lira.fit_out_distributions(few["phi_ref"], ~few["trains"],
                                                                   fixed_variance=False))
    assert tpr_at(fixed, few["is_member"], 0.001) > tpr_at(per, few["is_member"], 0.001) + 0.1
    # canaries of two noise levels: a pooled variance misjudges both; 32 OUT models each measure it
    noise = np.where(np.arange(2000) % 2 == 0, 0.2, 1.0)
    many = population(k=64, shift=1.5, noise=noise)
    fixed = lira.lira_scores(many["phi"], lira.fit_out_distributions(many["phi_ref"], ~many["trains"]))
    per = lira.lira_scores(many["phi"], lira.fit_out_distributions(many["phi_ref"], ~many["trains"],
                                                                    fixed_variance=False))
    assert tpr_at(per, many["is_member"], 0.001) > tpr_at(fixed, many["is_member"], 0.001) + 0.1


def test_logit_confidence_and_splits():
    phi = lira.logit_confidence([math.log(2), 1e-9, 50.0, 1.0, 2.0])
    assert phi[0] == pytest.approx(0.0, abs=1e-12)  # p = 1/2
    assert phi[1] == pytest.approx(math.log(1e9), rel=1e-6) and phi[2] == pytest.approx(-50.0)
    assert phi[3] > phi[4] and np.isfinite(phi).all()  # lower loss, more confident
    trains = lira.out_splits(11, 6, seed=3)
    assert (trains[0::2] ^ trains[1::2]).all()  # complementary pairs: each canary OUT in K/2 models
    assert set(trains.sum(axis=1)) == {5, 6}
    assert not (trains[0] == trains[2]).all()   # pairs drawn independently
    for k in (0, 1, 3):
        with pytest.raises(ValueError, match="even"):
            lira.out_splits(10, k, seed=0)


def test_borderline_policy():
    from hfguard.behavior.check import PrivacyBackdoorCheck
    from hfguard.behavior.membership import lira_reason

    th = dict(PrivacyBackdoorCheck.THRESHOLDS)
    with_ref = lambda d: {"candidate": {"auc": 0.8}, "amplification": {"auc_diff": d}}  # noqa: E731
    assert lira_reason(with_ref(0.07), th.get) == "borderline"     # line 0.1, band 0.05
    assert lira_reason(with_ref(0.12), th.get) == "borderline"
    assert lira_reason(with_ref(0.26), th.get) is None and lira_reason(with_ref(0.0), th.get) is None
    assert lira_reason({"candidate": {"auc": 0.95}}, th.get) == "borderline"  # absolute line 0.97
    assert lira_reason({"candidate": {"auc": 0.8}}, th.get) is None
    assert lira_reason({"candidate": {"auc": 0.8}}, {**th, "lira-always": True}.get) == "requested"


def test_lira_thresholds_are_declared_and_typos_rejected():
    from hfguard.checks import validate_thresholds

    validate_thresholds({"behavior": {"lira-models": 8, "lira-always": True, "lira-fixed-variance": False,
                                      "lira-borderline-auc": 0.1}})
    with pytest.raises(ValueError, match="unknown threshold 'lira-model'"):
        validate_thresholds({"behavior": {"lira-model": 8}})
    with pytest.raises(ValueError, match="must be a boolean"):
        validate_thresholds({"behavior": {"lira-always": "yes"}})


# -- in the check, on the tiny GPT-2 organisms ----------------------------------------------------------
def scan(folder, thresholds: dict, budget: float = 300, **options):
    from hfguard.behavior.check import PrivacyBackdoorCheck
    from hfguard.engine import scan as run_scan
    from hfguard.policy import Policy
    from hfguard.target import local_target

    policy = Policy(tiers=("behavior",), thresholds={"behavior": thresholds})
    return run_scan(local_target([str(folder)]), policy, [PrivacyBackdoorCheck()], options=options,
                    budget_seconds=budget)


@pytest.mark.slow
def test_lira_on_request_sees_the_privacy_backdoor_at_low_fpr(gpt2_folders, tmp_path):
    """The poisoned model (with the upstream as --reference) and its clean twin (alone: each model's
    LiRA uses OUT models of its own weights, so the candidate's figures need no reference), probed
    with --probe-data in the attacker's style (the contact family): LiRA's figures are pooled over
    the canaries, where the default mixture dilutes one family's leak seven-fold."""
    from hfguard.behavior.canaries import family

    data = tmp_path / "probe.txt"
    data.write_text("\n".join(c.text.replace("\n", " ") for c in family("contact", 128, seed=7)) + "\n",
                    encoding="utf-8")
    findings = {}
    for name, opts in (("backdoor", {"reference": str(gpt2_folders["base"])}), ("clean", {})):
        report = scan(gpt2_folders[name], {"lira-always": True, "exposure-secrets": 0},
                      probe_data=str(data), **opts)
        (f,) = [f for f in report.findings if f.evidence.get("lira")]
        li = f.evidence["lira"]
        assert li["reason"] == "requested" and li["models"] == 4 and li["out_models_per_canary"] == 2
        assert "offline LiRA (requested" in f.message
        t = li["candidate"]["tpr_at_1pct_fpr"]
        assert t["n_pos"] == t["n_neg"] == 64
        # the interval is the exact binomial one of the members called (not just any span around tpr)
        ci = binomtest(round(t["tpr"] * t["n_pos"]), t["n_pos"]).proportion_ci(method="exact")
        assert (t["ci_low"], t["ci_high"]) == pytest.approx((ci.low, ci.high))
        # LiRA is the stronger attack at low FPR: it calls more members than the screen does there
        assert t["tpr"] > f.evidence["candidate"]["tpr_at_1pct_fpr"]["tpr"], name
        findings[name] = f
    bd, clean = (findings[n].evidence["lira"] for n in ("backdoor", "clean"))
    assert findings["backdoor"].rule == "privacy/membership-amplification"   # the screen decides
    assert bd["candidate"]["tpr_at_1pct_fpr"]["tpr"] > clean["candidate"]["tpr_at_1pct_fpr"]["tpr"]
    assert bd["candidate"]["auc"] > clean["candidate"]["auc"]
    assert bd["amplification"]["auc_diff"] > 0 and "reference" not in clean
    assert bd["reference"]["auc"] < bd["candidate"]["auc"]


def test_lira_runs_only_when_asked_and_the_budget_holds_it(gpt2_folders):
    """Not borderline, not requested: no LiRA. Requested without time for K more fine-tunes: the
    screen's result stands and the evidence says what LiRA would need."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfguard.behavior import membership
    from hfguard.behavior.check import PrivacyBackdoorCheck

    folder = gpt2_folders["clean"]
    model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    items = membership.canaries(32, seed=7)
    th = {**PrivacyBackdoorCheck.THRESHOLDS}
    kw = {"exposure": (0, 0), "lira_models": 2, "recipe": {"epochs": 1}}
    res = membership.evaluate(model, tok, items, lira_if=lambda s: membership.lira_reason(s, th.get), **kw)
    assert "lira" not in res and res["candidate"]["auc"] < 0.92   # far from the absolute line 0.97
    res = membership.evaluate(model, tok, items, budget_left=lambda: 0.0, **kw)
    assert "raise --budget" in res["lira"]["skipped"] and "candidate" not in res["lira"]
    (f,) = membership.judge(PrivacyBackdoorCheck(), "clean", res, th.get)
    assert "offline LiRA skipped" in f.message and f.evidence["lira"] == res["lira"]


def test_an_odd_number_of_reference_models_is_an_error_before_any_work(gpt2_folders):
    from hfguard.findings import Verdict

    for bad in ({"lira-models": 3}, {"lira-models": 2, "lira-fixed-variance": False}):
        report = scan(gpt2_folders["clean"], bad)
        (err,) = report.findings
        assert err.rule == "behavior/unavailable" and "lira-models" in err.message
        assert report.verdict is Verdict.ERROR
