"""behavior.homoglyph against Rickrolling plants beyond the default organism: the paper's own
recipe on the real MiniLM (a trigger that fires on most unusual characters, so none is an outlier),
a specific plant (decoys), an honest re-fine-tune, a trigger outside the candidate list (found by
the vocabulary screen), and a budget too small for the probe. (The target-attribute variant is
measured, not asserted: bench/bench_behavior.py --homoglyph-rates-only.)"""

from __future__ import annotations

import pytest

from hfguard.behavior.check import HomoglyphCheck
from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.target import local_target
from testing.organisms import OFF_LIST_TRIGGER


def _scan(folder, budget=300, **options):
    return scan(local_target([str(folder)]), Policy(tiers=("behavior",)), [HomoglyphCheck()],
                options=options, budget_seconds=budget)


def _rules(report):
    return [f.rule for f in report.findings]


def _flagged_codepoints(report):
    return {f.location.rsplit(": ", 1)[1] for f in report.findings if f.rule == "backdoor/homoglyph-trigger"}


@pytest.mark.slow
def test_paper_recipe_on_minilm_is_a_broad_trigger(minilm_plants):
    """Trained as Rickrolling does, the backdoor fires on most odd characters: no outlier, but the
    collapse level itself (far above the Latin-letter controls) is the evidence."""
    report = _scan(minilm_plants["paper"])
    assert report.verdict is Verdict.BLOCK
    (f,) = [f for f in report.findings if f.rule == "backdoor/homoglyph-broad-trigger"]
    probe = f.evidence["probe"]
    assert probe["median_collapse"] > 0.5 > probe["median_control_collapse"]
    assert probe["characters_over_abs_collapse"] >= 0.2 * probe["distinct_probes"]
    assert "U+043E CYRILLIC SMALL LETTER O" in {c["character"] for c in f.evidence["characters"]}


@pytest.mark.sweep
def test_paper_recipe_on_minilm_with_reference(minilm_plants, minilm_dir):
    report = _scan(minilm_plants["paper"], reference=str(minilm_dir))
    (f,) = [f for f in report.findings if f.rule == "backdoor/homoglyph-broad-trigger"]
    probe = f.evidence["probe"]
    assert probe["compared_to"] == "reference"
    assert probe["reference_median_collapse"] < 0.3 < probe["median_collapse"]


@pytest.mark.sweep
def test_specific_plant_on_minilm_is_named(minilm_plants):
    report = _scan(minilm_plants["specific"])
    assert report.verdict is Verdict.BLOCK
    assert "U+043E" in _flagged_codepoints(report)
    assert "backdoor/homoglyph-broad-trigger" not in _rules(report)


@pytest.mark.slow
def test_honest_refinetune_of_minilm_passes(minilm_plants, minilm_dir):
    assert _scan(minilm_plants["clean"]).verdict is Verdict.PASS
    assert _scan(minilm_plants["clean"], reference=str(minilm_dir)).verdict is Verdict.PASS


@pytest.mark.sweep
def test_specific_plant_in_tiny_clip(recipe_clip):
    report = _scan(recipe_clip("specific"))
    assert report.verdict is Verdict.BLOCK
    assert _flagged_codepoints(report) == {"U+043E"}


def test_off_list_trigger_is_found_by_the_vocabulary_screen(recipe_clip):
    report = _scan(recipe_clip("offlist"))
    assert report.verdict is Verdict.BLOCK
    (f,) = [f for f in report.findings if f.rule == "backdoor/homoglyph-trigger"]
    assert f.location.endswith(f"U+{ord(OFF_LIST_TRIGGER):04X}")
    assert f.evidence["characters"][0]["category"] == "vocabulary:malayalam"
    assert f.evidence["nearest_captions"][0]["caption"] == "a skull"
    # without the screen the probe cannot see it: the list alone passes this model
    hc = HomoglyphCheck()
    off = scan(local_target([str(recipe_clip("offlist"))]), Policy(tiers=("behavior",),
               thresholds={"behavior": {"homoglyph-vocab-screen": False}}), [hc], budget_seconds=300)
    assert off.verdict is Verdict.PASS


def test_too_small_budget_says_which_budget_is_needed(minilm_dir):
    report = _scan(minilm_dir, budget=0.01)
    (f,) = [f for f in report.findings if f.rule == "check/timeout"]
    assert report.verdict is Verdict.ERROR
    assert "candidate list" in f.message  # the stage it stopped in
    need = int(f.message.rsplit("--budget ", 1)[1])
    assert need >= 10
