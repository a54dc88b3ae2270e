"""The simulated victim: how a model kind is probed (`Modality`) and the one fine-tuning loop
(`train_copy`) that LM and CLIP membership tests share."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def train_copy(model: Any, items: list[Any], batch_loss: Callable[[Any, list[Any]], Any], *,
               epochs: int, lr: float, batch: int, seed: int = 0,
               tick: Callable[[str], None] = lambda s: None) -> Any:
    """Full fine-tuning of a copy (AdamW) with a fixed seed and order;
    `batch_loss(model, items)` gives per-example losses."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    ft = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(ft.parameters(), lr=lr, weight_decay=0.0)
    order = list(items)
    for _ in range(epochs):
        rng.shuffle(order)
        for i in range(0, len(order), batch):
            tick("canary fine-tune")
            loss = batch_loss(ft, order[i : i + batch]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ft.eval()


@dataclass(frozen=True)
class Modality:
    """How one model kind is probed: per-example `losses(model, tok, data)`, the victim's
    `finetune(model, tok, data, tick=, seed=, **recipe)`, and `subset(data, indices)`."""

    name: str
    losses: Callable[..., Any]
    finetune: Callable[..., Any]
    subset: Callable[[Any, list[int]], Any]
