"""behavior.homoglyph on a tiny CLIP text encoder with a planted Rickrolling trigger, its clean
twin, and the real pre-trained MiniLM."""

from __future__ import annotations

import json
import pickle
import shutil

from click.testing import CliRunner

from hfguard.behavior import homoglyph
from hfguard.behavior.check import HomoglyphCheck
from hfguard.behavior.load import describe, load_text_encoder
from hfguard.cli import main
from hfguard.engine import scan
from hfguard.findings import Verdict
from hfguard.policy import Policy
from hfguard.target import local_target

BEHAVIOR = Policy(tiers=("behavior",))


def _scan(folder, **options):
    return scan(
        local_target([str(folder)]), BEHAVIOR, [HomoglyphCheck()], options=options, budget_seconds=300
    )


def test_planted_trigger_is_found_and_named(clip_folders):
    report = _scan(clip_folders["backdoor"])
    hits = [f for f in report.findings if f.rule == "backdoor/homoglyph-trigger"]
    assert report.verdict is Verdict.BLOCK
    assert [f.location.rsplit(": ", 1)[1] for f in hits] == ["U+043E"]  # only the planted character
    ev = hits[0].evidence
    assert ev["characters"][0]["name"] == "CYRILLIC SMALL LETTER O"
    assert ev["characters"][0]["imitates"] == "o"
    assert ev["nearest_captions"][0]["caption"] == "a skull"  # what the attacker aimed at
    assert ev["scores"]["collapse"] > 0.5


def test_clean_twin_passes(clip_folders):
    report = _scan(clip_folders["clean"])
    assert report.verdict is Verdict.PASS
    info = [f for f in report.findings if f.rule == "behavior/homoglyph-probe"]
    assert info and info[0].evidence["probe"]["distinct_probes"] > 40


def test_too_few_distinct_candidates_is_an_error_not_a_pass(clip_folders, monkeypatch):
    """Where the tokenizer cannot tell enough candidates apart there is no population for the
    outlier test: the probe did not run, and the report says so (ERROR)."""
    from hfguard.behavior import homoglyph

    monkeypatch.setattr(homoglyph, "MIN_GROUPS", 10_000)
    report = _scan(clip_folders["clean"])
    (f,) = [f for f in report.findings if f.rule == "behavior/homoglyph-inconclusive"]
    assert f.error and f.evidence["probe"]["distinct_probes"] < 10_000
    assert not any(f.rule == "behavior/homoglyph-probe" for f in report.findings)
    assert report.verdict is Verdict.ERROR


def test_reference_comparison(clip_folders):
    # against its clean twin the backdoor stands out even more; the twin against itself is quiet
    bd = _scan(clip_folders["backdoor"], reference=str(clip_folders["clean"]))
    assert bd.verdict is Verdict.BLOCK
    hit = next(f for f in bd.findings if f.rule == "backdoor/homoglyph-trigger")
    assert hit.evidence["probe"]["compared_to"] == "reference"
    assert hit.evidence["scores"]["vs_reference_collapse"] > 0.5
    clean = _scan(clip_folders["clean"], reference=str(clip_folders["clean"]))
    assert clean.verdict is Verdict.PASS


def test_candidates_dedup_by_token_ids(minilm_dir):
    enc = load_text_encoder(describe(minilm_dir), "cpu")
    groups, unseen = homoglyph.build_groups(enc, homoglyph.load_candidates())
    sigs = [tuple(enc.token_ids(t) for t in g.triggered) for g in groups]
    assert len(set(sigs)) == len(sigs)  # distinct groups tokenize differently
    assert any(len(g.members) > 1 for g in groups)  # look-alikes the model cannot tell apart merge
    # the uncased WordPiece tokenizer strips accents and drops zero-width characters: unseen, not scored
    names = {c.label.split(" ", 1)[1] for c in unseen}
    assert {"LATIN SMALL LETTER E WITH ACUTE", "ZERO WIDTH SPACE"} <= names
    for g in groups:
        for m in g.members[1:]:
            trig = [t.replace(g.members[0].char, m.char) for t in g.triggered]
            assert [enc.token_ids(t) for t in trig] == [enc.token_ids(t) for t in g.triggered]


def test_real_minilm_passes_through_cli(minilm_dir):
    res = CliRunner().invoke(
        main, ["scan", str(minilm_dir), "--tier", "behavior", "--format", "json", "--budget", "300"]
    )
    report = json.loads(res.stdout)
    assert res.exit_code == 0, res.output
    assert report["verdict"] == "PASS"
    rules = {f["rule"] for f in report["findings"]}
    assert "behavior/homoglyph-probe" in rules
    assert "behavior/not-applicable" in rules  # the privacy probe does not run on encoders
    # stage-by-stage progress with counts on stderr
    assert "behavior.homoglyph: vocabulary screen: " in res.stderr
    info = next(f for f in report["findings"] if f["rule"] == "behavior/homoglyph-probe")
    probe = info["evidence"]["probe"]
    assert probe["vocabulary_screen"]["characters"] > 300  # the tokenizer's own non-Latin letters
    (cov,) = [f for f in report["findings"] if f["rule"] == "behavior/homoglyph-coverage"]
    folded = {c.split(" ", 1)[1] for c in cov["evidence"]["folded_or_dropped"]}
    assert {"LATIN SMALL LETTER E WITH ACUTE", "ZERO WIDTH SPACE"} <= folded  # uncased WordPiece
    assert cov["evidence"]["mapped_to_unknown_token"]  # characters outside the vocabulary: [UNK]


class _Mark:
    """Unpickling this would create a file: the proof that nothing was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_weights_are_refused_not_loaded(clip_folders, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(clip_folders["clean"], folder)
    (folder / "model.safetensors").unlink()
    mark = tmp_path / "MARK"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Mark(str(mark)), protocol=2))
    report = _scan(folder)
    refused = [f for f in report.findings if f.rule == "behavior/refused-weights"]
    assert refused and refused[0].error
    assert report.verdict is Verdict.ERROR
    assert not mark.exists()


def test_missing_torch_is_an_error_not_a_pass(clip_folders, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    report = _scan(clip_folders["clean"])
    assert report.verdict is Verdict.ERROR
    assert report.findings[0].rule == "behavior/unavailable"


def test_full_clip_model_encodes_with_its_projection(char_tok, tmp_path):
    import torch
    from transformers import CLIPConfig, CLIPModel

    from testing.organisms import save

    torch.manual_seed(0)
    text = {
        "vocab_size": len(char_tok),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 96,
        "eos_token_id": 3,
        "bos_token_id": 2,
        "pad_token_id": 0,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 16,
    }
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    md = describe(save(model, char_tok, tmp_path / "clip"))
    assert md.kind == "clip"
    enc = load_text_encoder(md, "cpu")
    got = enc.encode(["a dog", "a cat on a mat"])
    with torch.no_grad():
        inputs = char_tok(["a dog", "a cat on a mat"], padding=True, return_tensors="pt")
        want = model.text_projection(model.text_model(**inputs).pooler_output)
    assert got.shape == (2, 16)
    assert torch.allclose(got, torch.nn.functional.normalize(want, dim=-1), atol=1e-5)


def test_torch_zip_weights_load_weights_only(clip_folders, tmp_path):
    import torch
    from safetensors.torch import load_file

    # an honest torch zip checkpoint loads (weights_only) and is probed like the safetensors one
    honest = tmp_path / "honest"
    shutil.copytree(clip_folders["clean"], honest)
    torch.save(load_file(honest / "model.safetensors"), honest / "pytorch_model.bin")
    (honest / "model.safetensors").unlink()
    assert _scan(honest).verdict is Verdict.PASS
    # a torch zip whose pickle would run code is rejected by the weights_only unpickler: no mark
    evil = tmp_path / "evil"
    shutil.copytree(honest, evil)
    mark = tmp_path / "MARK"
    torch.save({"text_model.embeddings.token_embedding.weight": _Mark(str(mark))}, evil / "pytorch_model.bin")
    report = _scan(evil)
    assert report.verdict is Verdict.ERROR
    assert [f.rule for f in report.findings] == ["behavior/refused-weights"]
    assert not mark.exists()
