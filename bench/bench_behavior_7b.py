"""The canary membership test (behavior.privacy_backdoor) on a LLaMA-7B-shaped causal LM on one GPU:
bf16 weights, the LoRA victim (victim-recipe = "lora", what `auto` picks above 1B parameters).
Random init built directly on the GPU from a config (no download, no checkpoint); time per stage and
peak GPU memory.

    python bench/bench_behavior_7b.py                 # LLaMA-7B shape: hidden 4096, 32 layers, 11008
    python bench/bench_behavior_7b.py --layers 4      # the same width, fewer layers
    python bench/bench_behavior_7b.py --layers 2 --hidden 256 --device cpu   # CPU smoke (fp32)

Without CUDA it runs the CPU smoke (--layers 2 --hidden 256) instead: the 7B is never run on a CPU.
The stages are those of `membership.evaluate` (one candidate, no reference), called one by one to
time them; the candidate's weights are checked bit-identical after the test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # testing/ (not in the wheel)


def build(layers: int, hidden: int, device: str, dtype: str) -> object:
    """LlamaForCausalLM with LLaMA-7B's proportions (head dim 128, MLP 2.6875x, vocabulary 32000),
    random init, created on `device` in `dtype` (no fp32 copy of a 7B in host memory)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = max(1, hidden // 128)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 43 // 16,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=2048)
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    return model.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--canaries", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lr", type=float, default=None, help="default: the check's lora-lr")
    args = ap.parse_args()

    import numpy as np
    import torch

    from hfguard.behavior import membership
    from hfguard.behavior.check import PrivacyBackdoorCheck
    from hfguard.behavior.load import lm_dtype, pick_device
    from hfguard.behavior.victim import n_parameters
    from testing.organisms import char_tokenizer

    device = pick_device(args.device)
    if not device.startswith("cuda") and (args.layers, args.hidden) != (2, 256):
        print(f"no CUDA device ({device}): a {args.layers}-layer, {args.hidden}-wide LM is not run on a CPU; "
              "running the CPU smoke (--layers 2 --hidden 256) instead")
        args.layers, args.hidden = 2, 256
    th = PrivacyBackdoorCheck.THRESHOLDS
    dtype = lm_dtype(device, str(th["lm-dtype"]))
    recipe = {"victim": "lora", "epochs": int(th["finetune-epochs"]), "batch": int(th["finetune-batch"]),
              "lr": args.lr or float(th["lora-lr"]), "lora_rank": int(th["lora-rank"]),
              "lora_alpha": float(th["lora-alpha"])}
    cuda = device.startswith("cuda")
    if cuda:
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    times: dict[str, float] = {}
    peaks: dict[str, float] = {}

    def stage(name: str, t0: float) -> None:
        if cuda:
            torch.cuda.synchronize(device)
            peaks[name] = torch.cuda.max_memory_allocated(device) / 2**30
        times[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = build(args.layers, args.hidden, device, dtype)
    tok = char_tokenizer()
    stage("load (build on device)", t0)
    print(f"model: LLaMA-shaped, {args.layers} layers x {args.hidden}, {n_parameters(model) / 1e9:.2f}B "
          f"parameters, {dtype} on {device}; victim: {recipe}")
    # bit-exact copy to compare with, except for the full 7B (a second 13 GiB): per-tensor sums there
    small = not cuda or args.layers < 32
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()} if small else None
    sums = [p.detach().float().sum().item() for p in model.parameters()]

    items = membership.canaries(args.canaries, seed=0)
    texts = [c.text for c in items]
    is_member = membership._split(len(texts), 0)
    members = [t for t, m in zip(texts, is_member, strict=True) if m]
    t0 = time.perf_counter()
    before = membership.example_losses(model, tok, texts)
    ctrl = membership.example_losses(model, tok, list(membership.CONTROL))
    stage("losses (canaries + control, before)", t0)
    t0 = time.perf_counter()
    ft = membership.finetune(model, tok, members, seed=0, **recipe)
    stage(f"victim fine-tune (LoRA, {len(members)} members x {recipe['epochs']} epochs)", t0)
    t0 = time.perf_counter()
    after = membership.example_losses(ft, tok, texts)
    fig = membership.membership_figures(before - after, is_member)
    exp_kw = {"n_alt": int(th["exposure-alternatives"]), "limit": int(th["exposure-secrets"])}
    member_items = [c for c, m in zip(items, is_member, strict=True) if m]
    exp = membership.secret_exposure(ft, tok, member_items, **exp_kw)
    stage("scoring (losses after, figures, exposure)", t0)
    del ft

    width = max(len(k) for k in times)
    for k, v in times.items():
        print(f"  {k:<{width}}  {v:8.2f} s" + (f"   peak GPU {peaks[k]:6.1f} GiB" if k in peaks else ""))
    print(f"  {'total (without load)':<{width}}  {sum(times.values()) - next(iter(times.values())):8.2f} s")
    print(f"membership AUC {fig['auc']:.3f} (random init: no backdoor, expect ~0.5 and up), loss before "
          f"{np.median(before):.2f} / control {np.median(ctrl):.2f}, exposure of members "
          f"{np.mean(exp) if exp else float('nan'):.2f} bits")
    same = [p.detach().float().sum().item() for p in model.parameters()] == sums
    if frozen is not None:
        same = same and all(torch.equal(p.detach(), frozen[n]) for n, p in model.named_parameters())
    print(f"candidate weights unchanged after the test: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
