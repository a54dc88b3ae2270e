"""The canary membership test for CLIP (transformers `CLIPModel` or open_clip): image-caption canaries.

Each canary pairs a PII-like caption (`membership.canary`) with a synthetic image drawn from a
seed (a coarse random colour grid plus noise, at the model's image size, normalised with the
model's image mean / std). The victim's recipe is CLIP's own symmetric contrastive loss on the
member pairs; the per-pair loss is the symmetric cross-entropy of that pair against the whole
probe set (all canaries, members and non-members, in one fixed order), so it does not depend on
how fine-tuning batches were drawn. `membership.evaluate` does the rest (split, calibration
before - after, AUC / TPR / amplification) through the `CLIP` modality defined here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hfguard.behavior.victim import Modality, train_copy

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP defaults when no preprocessor config
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def image_norm(root: Path | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Image mean / std from the folder's preprocessor_config.json (transformers) or
    open_clip_config.json (``preprocess_cfg``), JSON only; else CLIP's."""
    import json

    for name, keys in (
        ("preprocessor_config.json", ("image_mean", "image_std")),
        ("open_clip_config.json", ("mean", "std")),
    ):
        try:
            cfg = json.loads((Path(root or ".") / name).read_text(encoding="utf-8"))
            cfg = cfg.get("preprocess_cfg", cfg) if name.startswith("open_clip") else cfg
            mean, std = (tuple(float(x) for x in cfg[k]) for k in keys)
            if len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std):
                return mean, std
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return CLIP_MEAN, CLIP_STD


def synthetic_images(
    n: int,
    size: int,
    seed: int = 0,
    norm: tuple[tuple[float, ...], tuple[float, ...]] = (CLIP_MEAN, CLIP_STD),
) -> Any:
    """`n` distinct deterministic images (n, 3, size, size), already normalised."""
    import torch

    g = torch.Generator().manual_seed(seed)
    grid = torch.rand(n, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(grid, size=(size, size), mode="nearest")
    img = (img + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm)
    return (img - mean) / std


class ClipData:
    """Caption-image pairs for one CLIP model: the shape `membership.evaluate` passes around."""

    def __init__(self, captions: list[str], images: Any) -> None:
        self.captions, self.images = captions, images

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, idx: list[int]) -> ClipData:
        return ClipData([self.captions[i] for i in idx], self.images[idx])


def _is_open_clip(model: Any) -> bool:
    return hasattr(model, "encode_image") and not hasattr(model, "config")


def make_data(model: Any, captions: list[str], seed: int, root: Path | None = None) -> ClipData:
    if _is_open_clip(model):
        size = model.visual.image_size
        size = int(size[0] if isinstance(size, tuple | list) else size)
    else:
        size = int(model.config.vision_config.image_size)
    return ClipData(captions, synthetic_images(len(captions), size, seed, image_norm(root)))


def _logits(model: Any, tok: Any, data: ClipData) -> Any:
    """Image-to-text logits (n, n) of the pairs, as CLIP scales them."""
    import torch

    if _is_open_clip(model):  # open_clip: normalised features, exp(logit_scale) (+ SigLIP's bias)
        images = data.images.to(model.logit_scale.device, dtype=model.logit_scale.dtype)
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(tok(data.captions).to(images.device), normalize=True)
        logits = model.logit_scale.exp() * img @ txt.t()
        bias = getattr(model, "logit_bias", None)
        return (logits if bias is None else logits + bias).float()
    max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))
    enc = tok(data.captions, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    enc = enc.to(model.device)
    out = model(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        pixel_values=data.images.to(model.device, dtype=next(model.parameters()).dtype),
    )
    return out.logits_per_image.float() if torch.is_tensor(out.logits_per_image) else out[0].float()


def _pair_loss(logits: Any) -> Any:
    import torch

    labels = torch.arange(len(logits), device=logits.device)
    ce = torch.nn.functional.cross_entropy
    return (ce(logits, labels, reduction="none") + ce(logits.t(), labels, reduction="none")) / 2


def pair_losses(model: Any, tok: Any, data: ClipData) -> Any:
    """Per-pair symmetric contrastive loss against the whole set (numpy array)."""
    import torch

    model.eval()
    with torch.inference_mode():
        return _pair_loss(_logits(model, tok, data)).cpu().numpy()


def finetune(
    model: Any,
    tok: Any,
    data: ClipData,
    *,
    epochs: int = 4,
    lr: float = 1e-3,
    batch: int = 8,
    seed: int = 0,
    tick: Callable[[str], None] = lambda s: None,
) -> Any:
    """The simulated victim: full fine-tuning of a copy with CLIP's contrastive loss (AdamW)."""
    def batch_loss(ft: Any, idx: list[int]) -> Any:
        return _pair_loss(_logits(ft, tok, data.subset(idx)))

    return train_copy(model, list(range(len(data))), batch_loss, epochs=epochs, lr=lr, batch=batch,
                      seed=seed, tick=tick)


def load_clip(md: Any, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer): a transformers CLIPModel or an open_clip model (``local-dir:``), from
    safetensors / weights_only torch zip; pickles are refused."""
    from hfguard.behavior.load import load_open_clip, load_with_tokenizer

    if md.kind == "open_clip":
        enc = load_open_clip(f"local-dir:{md.root}", device, name=md.name)
        return enc.model, enc.tokenizer
    from transformers import CLIPModel

    return load_with_tokenizer(CLIPModel, md, device)


CLIP = Modality("image-text", pair_losses, finetune, lambda data, idx: data.subset(idx))
