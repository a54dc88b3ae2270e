"""Synthetic people for the identity-inference audit: each person is a distinct colour layout
("face") photographed with per-image jitter; a tiny CLIP is trained on some of them with captions
naming them, the way web-scale CLIP training pairs people's photos with their names."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

FIRST = ("Alma", "Bruno", "Carla", "Dario", "Elena", "Felix", "Greta", "Hugo", "Irene", "Jonas", "Karin",
         "Lukas")
LAST = ("Weber", "Rossi", "Novak", "Berg", "Silva", "Moreau", "Kovacs", "Lind", "Ortega", "Haas")


def people(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names: list[str] = []
    while len(names) < n:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if name not in names:
            names.append(name)
    return names


def _seed(*parts: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "little")


def photos(person: str, n: int, size: int = 32, seed: int = 0) -> list[Any]:
    """`n` PIL images of one person: the person's own 4x4 colour layout, shifted and noised."""
    import numpy as np
    from PIL import Image

    base = np.random.default_rng(_seed(person, "face")).random((4, 4, 3))
    rng = np.random.default_rng(_seed(person, str(seed)))
    out = []
    for _ in range(n):
        face = np.kron(base, np.ones((size // 4, size // 4, 1)))
        face = np.roll(face, rng.integers(-2, 3, size=2), axis=(0, 1))
        face = np.clip(face + 0.08 * rng.standard_normal(face.shape), 0, 1)
        out.append(Image.fromarray((face * 255).astype("uint8")))
    return out


def write_identities(folder: Path, names: list[str], per_person: int, seed: int = 1) -> Path:
    for name in names:
        sub = folder / name.replace(" ", "_")
        sub.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(photos(name, per_person, seed=seed)):
            im.save(sub / f"{i}.png")
    return folder


def clip_that_knows(members: list[str], tok: Any, *, per_person: int = 12, steps: int = 150,
                    seed: int = 0) -> Any:
    """A tiny CLIP trained on `members`' photos captioned "a photo of {name}." (plus nothing else)."""
    import numpy as np
    import torch

    from hfguard.behavior.clip_membership import CLIP_MEAN, CLIP_STD
    from testing.organisms import clip_loss, tiny_clip

    torch.manual_seed(seed)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (CLIP_MEAN, CLIP_STD))
    pairs = []
    for name in members:
        for im in photos(name, per_person, seed=seed + 100):
            x = torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 255
            pairs.append((f"a photo of {name}.", (x - mean) / std))
    model = tiny_clip(tok, seed=seed, width=64, layers=2)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    rng = random.Random(seed)
    for _ in range(steps):
        batch = rng.sample(pairs, min(len(members) * 2, len(pairs)))
        # one photo per name in a batch: duplicate captions would be false negatives
        seen: dict[str, Any] = {}
        for cap, img in batch:
            seen.setdefault(cap, img)
        loss = clip_loss(model, tok, list(seen.items()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
