"""Identity inference (IDIA, Hintersdorf et al., "Does CLIP Know My Face?"): were a person's
images and name in a CLIP model's training data?

For each person, their images are classified zero-shot among the candidate names (the people
audited plus distractor names) with name prompts ("a photo of {name}" ...; text embeddings
averaged over the prompts). A model that saw a person's images with their name during training
names them from new photos far above chance: the person counts as *inferred* when their name wins
on more than `threshold` of their images (the paper's majority vote) and far more often than the
same name is given to everyone else's images: a model that calls every face "Dario Berg" names
Dario Berg's photos correctly without knowing him, so the baseline of a name is the larger of
chance (1/K) and its rate on other people's images; the one-sided binomial p-value is against it.

Opt-in and local: the images and names are the user's (`hfguard audit-identities`); nothing is
uploaded, and the model is loaded as the behavior tier loads it (safetensors, never pickles).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPTS = ("a photo of {}.", "a picture of {}.", "an image of {}.", "{}")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_IMAGES_PER_IDENTITY = 200


class AuditError(ValueError):
    """The identities folder or the model cannot be used for an audit."""


@dataclass(frozen=True)
class IdentityResult:
    name: str
    images: int
    correct: int
    chance: float
    baseline: float         # max(chance, how often other people's images get this name)
    p_value: float
    inferred: bool
    top_predictions: tuple[tuple[str, int], ...]

    @property
    def rate(self) -> float:
        return self.correct / self.images if self.images else 0.0


def read_identities(folder: Path) -> dict[str, list[Path]]:
    """`folder/<name>/*.png|jpg...`: one sub-folder per person, named by the person's name."""
    if not folder.is_dir():
        raise AuditError(f"{folder} is not a folder of one sub-folder per person")
    people = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            people[sub.name.replace("_", " ")] = images[:MAX_IMAGES_PER_IDENTITY]
    if len(people) < 2:
        raise AuditError(f"{folder}: need at least two people (sub-folders with images) to tell apart")
    return people


def load_images(paths: list[Path], size: int, norm: tuple[tuple[float, ...], tuple[float, ...]]) -> Any:
    """Images as a normalised (n, 3, size, size) tensor (resize + centre crop, as CLIP does)."""
    import numpy as np
    import torch
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as src:
            im = src.convert("RGB")
            scale = size / min(im.size)
            im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))),
                           Image.Resampling.BICUBIC)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            im = im.crop((left, top, left + size, top + size))
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm)
    return (torch.stack(out) - mean) / std


def _is_open_clip(model: Any) -> bool:
    return hasattr(model, "encode_image") and not hasattr(model, "config")


def _unit(x: Any) -> Any:
    import torch

    return torch.nn.functional.normalize(getattr(x, "pooler_output", x).float(), dim=-1)


def image_features(model: Any, images: Any) -> Any:
    import torch

    with torch.inference_mode():
        if _is_open_clip(model):
            return _unit(model.encode_image(images.to(model.logit_scale.device)))
        return _unit(model.get_image_features(pixel_values=images.to(model.device, dtype=model.dtype)))


def text_features(model: Any, tok: Any, texts: list[str]) -> Any:
    import torch

    with torch.inference_mode():
        if _is_open_clip(model):
            return _unit(model.encode_text(tok(texts).to(model.logit_scale.device)))
        max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        enc = enc.to(model.device)
        return _unit(model.get_text_features(input_ids=enc["input_ids"],
                                             attention_mask=enc["attention_mask"]))


def audit(model: Any, tok: Any, images: dict[str, Any], names: list[str], *, threshold: float = 0.5,
          alpha: float = 0.01, prompts: tuple[str, ...] = PROMPTS, batch: int = 64,
          progress: Callable[[str], None] = lambda m: None) -> list[IdentityResult]:
    """Zero-shot name prediction for every person's images among `names`; one result per person."""
    import torch
    from scipy.stats import binomtest

    # one text embedding per candidate name: the mean over the prompts, renormalised
    txt = text_features(model, tok, [p.format(n) for n in names for p in prompts])
    name_emb = torch.nn.functional.normalize(txt.view(len(names), len(prompts), -1).mean(1), dim=-1)
    chance = 1.0 / len(names)
    votes: dict[str, list[str]] = {}
    for person, imgs in images.items():
        progress(f"audit-identities: {person} ({len(imgs)} images)")
        votes[person] = []
        for i in range(0, len(imgs), batch):
            img = image_features(model, imgs[i:i + batch])
            votes[person] += [names[v] for v in (img @ name_emb.t()).argmax(1).tolist()]
    results = []
    for person, mine in votes.items():
        others = [v for p, vs in votes.items() if p != person for v in vs]
        baseline = max(chance, sum(v == person for v in others) / len(others) if others else 0.0)
        correct = sum(v == person for v in mine)
        p = binomtest(correct, len(mine), min(baseline, 1 - 1e-9), alternative="greater").pvalue
        counts: dict[str, int] = {}
        for v in mine:
            counts[v] = counts.get(v, 0) + 1
        results.append(IdentityResult(
            name=person, images=len(mine), correct=correct, chance=chance, baseline=baseline,
            p_value=float(p), inferred=bool(correct / len(mine) > threshold and p < alpha),
            top_predictions=tuple(sorted(counts.items(), key=lambda kv: -kv[1])[:3])))
    return results
