"""The LoRA victim (victim.train_lora, threshold victim-recipe): what victims of large models do,
adapters on the loaded model with its weights frozen and untouched. On the tiny GPT-2 organisms it
must still see the privacy backdoor, leave the candidate bit-identical and say which recipe ran;
on a GPU the LM runs in bfloat16."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hfguard.cli import main
from hfguard.findings import Verdict

# the check's LoRA recipe at the learning rate of its full recipe (finetune-lr), the scale of these
# tiny models (lora-lr's default, 1e-3, is meant for billion-parameter ones)
LORA = {"victim": "lora", "epochs": 4, "lr": 3e-3, "batch": 8, "lora_rank": 8, "lora_alpha": 16.0}


def _attacker_style(tmp_path, n: int):
    """Contact-family lines the attacker never saw (as test_privacy.py's --probe-data)."""
    from hfguard.behavior.canaries import family

    data = tmp_path / "probe.txt"
    data.write_text("\n".join(c.text.replace("\n", " ") for c in family("contact", n, seed=7)) + "\n",
                    encoding="utf-8")
    return data


def _load(folder, device: str = "cpu", dtype: str = "float32"):
    from hfguard.behavior.load import describe, load_causal_lm

    return load_causal_lm(describe(folder), device, dtype)


def _snapshot(model):
    return {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def _assert_untouched(model, snap) -> None:
    import torch

    now = dict(model.named_parameters())
    assert set(now) == set(snap)
    for n, (before, grad) in snap.items():
        assert torch.equal(now[n].detach(), before) and now[n].requires_grad == grad, n
        assert now[n].dtype == before.dtype and now[n].grad is None, n
    assert not any(m._forward_hooks for m in model.modules())   # the adapters' hooks are gone


def test_lora_victim_sees_the_backdoor_and_leaves_the_candidate_untouched(gpt2_folders, tmp_path):
    from hfguard.behavior.membership import evaluate, read_probe_data

    items = read_probe_data(str(_attacker_style(tmp_path, 64)))
    auc = {}
    for name in ("backdoor", "clean"):
        model, tok = _load(gpt2_folders[name])
        snap = _snapshot(model)
        res = evaluate(model, tok, items, recipe=LORA, exposure=(0, 0))
        _assert_untouched(model, snap)
        assert res["recipe"]["victim"] == "lora"
        auc[name] = res["candidate"]["auc"]
    assert auc["backdoor"] > auc["clean"] + 0.15, auc   # measured 0.79 vs 0.52


def test_the_lora_victim_trains_only_its_adapters(gpt2_folders):
    """Adapters on every block projection (GPT-2's Conv1D), none on the embeddings or the LM head;
    after training the victim's losses differ from the candidate's while the candidate's do not move."""
    import numpy as np

    from hfguard.behavior.membership import example_losses, finetune
    from hfguard.behavior.victim import lora_targets

    model, tok = _load(gpt2_folders["clean"])
    names = [n for n, *_ in lora_targets(model)]
    layers = model.config.n_layer
    assert len(names) == 4 * layers and all(n.split(".")[-1] in ("c_attn", "c_proj", "c_fc") for n in names)
    texts = [f"call me at 555-01{i:02d} after nine" for i in range(16)]
    before = example_losses(model, tok, texts)
    ft = finetune(model, tok, texts, victim="lora", epochs=2, lr=1e-2)
    assert len(ft.parameters()) == 2 * len(names)
    assert example_losses(ft, tok, texts).mean() < before.mean() - 0.05   # it learned the members
    assert np.array_equal(example_losses(model, tok, texts), before)       # the candidate did not


def test_auto_picks_lora_above_the_parameter_line(gpt2_folders):
    from hfguard.behavior.membership import victim_recipe
    from hfguard.behavior.victim import n_parameters

    model, _ = _load(gpt2_folders["clean"])
    n = n_parameters(model)
    assert victim_recipe(model, "auto", n - 1) == "lora" and victim_recipe(model, "auto", n) == "full"
    assert victim_recipe(model, "lora", 10**12) == "lora" and victim_recipe(model, "full", 0) == "full"
    with pytest.raises(ValueError, match="victim-recipe 'qlora'"):
        victim_recipe(model, "qlora", 0)


def test_the_scan_evidence_names_the_recipe(gpt2_folders, tmp_path, scan_privacy):
    data = _attacker_style(tmp_path, 40)
    report = scan_privacy(gpt2_folders["backdoor"], probe_data=str(data),
                          thresholds={"victim-recipe": "lora"})
    (f,) = [f for f in report.findings if f.rule in ("privacy/membership-leakage", "behavior/privacy-probe")]
    assert f.evidence["recipe"]["victim"] == "lora" and f.evidence["recipe"]["lora_rank"] == 8
    assert f.evidence["recipe"]["dtype"] == "float32" and f.evidence["recipe"]["lr"] == 1e-3


def test_an_unknown_victim_recipe_is_a_usage_error(gpt2_folders, tmp_path):
    policy = tmp_path / "hfguard.toml"
    policy.write_text('[thresholds.behavior]\nvictim-recipe = "qlora"\n')
    res = CliRunner().invoke(main, ["scan", str(gpt2_folders["clean"]), "--tier", "behavior",
                                    "--policy", str(policy), "-q"])
    assert res.exit_code == 2 and "victim-recipe" in res.output and "'lora'" in res.output, res.output
    policy.write_text('[thresholds.behavior]\nlm-dtype = "fp8"\n')
    res = CliRunner().invoke(main, ["scan", str(gpt2_folders["clean"]), "--tier", "behavior",
                                    "--policy", str(policy), "-q"])
    assert res.exit_code == 2 and "lm-dtype" in res.output and "'bfloat16'" in res.output, res.output


def test_an_unknown_recipe_past_validation_is_an_error_not_a_pass(gpt2_folders, scan_privacy):
    """The API takes a Policy without validating it: the check itself fails closed."""
    report = scan_privacy(gpt2_folders["clean"], thresholds={"victim-recipe": "qlora"})
    (err,) = [f for f in report.findings if f.rule == "behavior/unavailable"]
    assert err.error and "victim-recipe" in err.message and report.verdict is Verdict.ERROR


@pytest.mark.gpu
def test_bf16_lora_victim_on_cuda(gpt2_folders, tmp_path, scan_privacy):
    """On CUDA the LM is loaded in bfloat16 and the LoRA victim still sees the backdoor; the loaded
    model (shared by the scan through the loader's cache) stays bit-identical."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    data = _attacker_style(tmp_path, 64)
    auc = {}
    for name in ("backdoor", "clean"):
        model, _ = _load(gpt2_folders[name], "cuda", "bfloat16")
        assert next(model.parameters()).dtype == torch.bfloat16
        snap = _snapshot(model)
        report = scan_privacy(gpt2_folders[name], probe_data=str(data), device="cuda",
                              thresholds={"victim-recipe": "lora", "lora-lr": LORA["lr"]})
        assert _load(gpt2_folders[name], "cuda", "bfloat16")[0] is model   # the scan used this object
        _assert_untouched(model, snap)
        (f,) = [f for f in report.findings if "recipe" in (f.evidence or {})]
        assert f.evidence["recipe"]["dtype"] == "bfloat16" and f.evidence["recipe"]["victim"] == "lora"
        auc[name] = f.evidence["candidate"]["auc"]
    assert auc["backdoor"] > auc["clean"] + 0.1, auc
