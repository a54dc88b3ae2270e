"""The simulated victim: how a model kind is probed (`Modality`) and the fine-tuning loop that LM
and CLIP membership tests share, as a full fine-tune of a copy (`train_copy`) or as LoRA adapters
on the model itself (`train_lora`, what victims of large models do; the base weights are frozen,
never copied and never written)."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VICTIM_RECIPES = ("auto", "full", "lora")   # threshold victim-recipe (membership.victim_recipe)


def train_copy(model: Any, items: list[Any], batch_loss: Callable[[Any, list[Any]], Any], *,
               epochs: int, lr: float, batch: int, seed: int = 0,
               tick: Callable[[str], None] = lambda s: None) -> Any:
    """Full fine-tuning of a copy (AdamW) with a fixed seed and order;
    `batch_loss(model, items)` gives per-example losses."""
    import torch

    torch.manual_seed(seed)
    ft = copy.deepcopy(model).train()
    _fit(ft, list(ft.parameters()), items, batch_loss, epochs=epochs, lr=lr, batch=batch, seed=seed,
         tick=tick)
    return ft.eval()


def _fit(ft: Any, params: list[Any], items: list[Any], batch_loss: Callable[[Any, list[Any]], Any], *,
         epochs: int, lr: float, batch: int, seed: int, tick: Callable[[str], None]) -> None:
    """AdamW on `params` over `items` in a seeded order, mean of `batch_loss(ft, items)` per step."""
    import torch

    rng = random.Random(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = list(items)
    for _ in range(epochs):
        rng.shuffle(order)
        for i in range(0, len(order), batch):
            tick("canary fine-tune")
            loss = batch_loss(ft, order[i : i + batch]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


def lora_targets(model: Any) -> list[tuple[str, Any, int, int]]:
    """(name, module, in features, out features) of every projection LoRA adapts: the nn.Linear
    layers (LLaMA-style q/k/v/o, gate/up/down) and transformers' GPT-2 Conv1D (c_attn, c_proj,
    c_fc) inside the transformer blocks; the embeddings and the LM head are left alone."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = []
    for name, mod in model.named_modules():
        if mod is head:
            continue
        if isinstance(mod, torch.nn.Linear):
            out.append((name, mod, mod.in_features, mod.out_features))
        elif type(mod).__name__ == "Conv1D" and getattr(mod, "weight", None) is not None:
            out.append((name, mod, mod.weight.shape[0], mod.weight.shape[1]))  # weight is (in, out)
    return out


class LoraVictim:
    """`base` seen through rank-`rank` adapters: calling it runs base with W x + (alpha / rank) B A x
    on every `lora_targets` projection. The adapters act through forward hooks registered for the
    duration of a call only, so `base` itself (weights, hooks, mode) is untouched and any other
    use of it sees the candidate as loaded. B starts at zero: the victim starts at the candidate.

    The adapters are fp32 even on a bf16 base (not bf16 under autocast): bf16 keeps 8 bits of
    mantissa, so an Adam step smaller than 1/256 of a weight is rounded away and small steps never
    accumulate; fp32 adapters are the usual mixed-precision master weights and cost nothing next to
    the base. The low-rank product is computed in fp32 and cast to the layer's output dtype."""

    def __init__(self, base: Any, rank: int = 8, alpha: float = 16.0, seed: int = 0) -> None:
        import torch

        gen = torch.Generator().manual_seed(seed)
        self.base, self.scale = base, alpha / rank
        self.device = base.device
        self.adapters: list[tuple[Any, Any, Any]] = []
        for _, mod, n_in, n_out in lora_targets(base):
            # A: Kaiming-uniform as in the LoRA paper's code; B: zeros
            bound = 1 / n_in ** 0.5
            a = (torch.rand(rank, n_in, generator=gen) * 2 - 1).mul_(bound).to(self.device).requires_grad_()
            b = torch.zeros(n_out, rank, device=self.device, requires_grad=True)
            self.adapters.append((mod, a, b))

    def parameters(self) -> list[Any]:
        return [t for _, a, b in self.adapters for t in (a, b)]

    def eval(self) -> LoraVictim:   # the base keeps its mode (eval: no dropout in the victim)
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        def hook(a: Any, b: Any) -> Callable[..., Any]:
            def add(mod: Any, inputs: tuple[Any, ...], output: Any) -> Any:
                delta = (inputs[0].float() @ a.t()) @ b.t()
                return output + (self.scale * delta).to(output.dtype)
            return add

        handles = [mod.register_forward_hook(hook(a, b)) for mod, a, b in self.adapters]
        try:
            return self.base(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()


def train_lora(model: Any, items: list[Any], batch_loss: Callable[[Any, list[Any]], Any], *,
               epochs: int, lr: float, batch: int, seed: int = 0, rank: int = 8, alpha: float = 16.0,
               tick: Callable[[str], None] = lambda s: None) -> LoraVictim:
    """LoRA fine-tuning (AdamW on the adapters only) with the same seeded loop as `train_copy`;
    the base weights are frozen for the duration (their requires_grad flags restored after)."""
    import torch

    torch.manual_seed(seed)
    ft = LoraVictim(model, rank, alpha, seed)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        _fit(ft, ft.parameters(), items, batch_loss, epochs=epochs, lr=lr, batch=batch, seed=seed, tick=tick)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return ft


def recipe_choice(choice: str) -> str:
    """`choice` if it is a victim-recipe value (ValueError naming them otherwise)."""
    if choice not in VICTIM_RECIPES:
        raise ValueError(f"victim-recipe {choice!r}: one of {', '.join(VICTIM_RECIPES)}")
    return choice


def n_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Modality:
    """How one model kind is probed: per-example `losses(model, tok, data)`, the victim's
    `finetune(model, tok, data, tick=, seed=, **recipe)`, and `subset(data, indices)`."""

    name: str
    losses: Callable[..., Any]
    finetune: Callable[..., Any]
    subset: Callable[[Any, list[int]], Any]
