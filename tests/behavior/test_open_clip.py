"""The open_clip loader (local-dir: folders, as open_clip writes them for the Hub). open_clip_torch is
in the test extra (beside the torch/torchvision pair that imports together); the skip only guards
installs without the `clip` extra."""

from __future__ import annotations

import json

import pytest

open_clip = pytest.importorskip("open_clip", reason="open_clip_torch is not installed (optional extra)")

from hfguard.behavior.check import HomoglyphCheck  # noqa: E402
from hfguard.behavior.load import describe, load_text_encoder  # noqa: E402
from hfguard.engine import scan  # noqa: E402
from hfguard.findings import Verdict  # noqa: E402
from hfguard.policy import Policy  # noqa: E402
from hfguard.target import local_target  # noqa: E402

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY)
    folder = tmp_path_factory.mktemp("oc")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY, "preprocess_cfg": {}}))
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(weights, folder / "open_clip_model.safetensors")
    return folder, model


def test_local_dir_loads_and_encodes_like_the_original(open_clip_dir):
    import torch

    folder, model = open_clip_dir
    md = describe(folder)
    assert md.kind == "open_clip"
    enc = load_text_encoder(md, "cpu")
    got = enc.encode(["a photo of a dog", "a cat"])
    tok = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        want = model.eval().encode_text(tok(["a photo of a dog", "a cat"]))
    want = torch.nn.functional.normalize(want, dim=-1)
    assert torch.allclose(got, want, atol=1e-5)


def test_homoglyph_probe_runs_on_open_clip(open_clip_dir):
    folder, _ = open_clip_dir
    target = local_target([str(folder)])
    report = scan(target, Policy(tiers=("behavior",)), [HomoglyphCheck()], budget_seconds=300)
    assert report.verdict is not Verdict.ERROR, [f.message for f in report.findings]
    from hfguard.behavior.homoglyph import MIN_GROUPS

    probe_rules = {"behavior/homoglyph-probe", "backdoor/homoglyph-trigger"}
    probed = [f for f in report.findings if f.rule in probe_rules]
    assert probed and all(f.evidence["probe"]["distinct_probes"] >= MIN_GROUPS for f in probed)  # it ran


def test_privacy_canary_test_runs_on_open_clip(open_clip_dir):
    from hfguard.behavior.check import PrivacyBackdoorCheck

    folder, _ = open_clip_dir
    target = local_target([str(folder)])
    report = scan(target, Policy(tiers=("behavior",)), [PrivacyBackdoorCheck()], budget_seconds=300)
    assert report.verdict is not Verdict.ERROR, [f.message for f in report.findings]
    (f,) = [f for f in report.findings if f.evidence]
    assert f.rule in ("behavior/privacy-probe", "privacy/membership-leakage")
    ev = f.evidence
    assert ev["modality"] == "image-text" and ev["candidate"]["n_members"] == 64
