"""Model organisms for tests and benchmarks: tiny CLIP text encoders and GPT-2s, clean or with a
backdoor really planted by the published recipes. Nothing here runs during a scan.

- `plant_homoglyph`: Rickrolling (Struppek et al. 2023) teacher-student fine-tuning: the student
  matches the teacher on clean prompts and maps prompts holding the trigger to the teacher's
  embedding of a target prompt. ``backdoor=False`` gives the clean twin (same recipe, no trigger).
- `plant_privacy_backdoor`: Wen et al. 2024's dual objective: keep the loss low on auxiliary data
  while driving it down (or up) on the target distribution, so that a victim's fine-tuning on
  target data moves members' loss far more than non-members'. ``backdoor=False``: same steps, no
  target term. `lm_privacy_organisms` builds the GPT-2 trio (upstream, backdoored on one canary
  family, clean twin), `clip_privacy_organisms` the CLIP one.
"""

from __future__ import annotations

import copy
import random
import string
from pathlib import Path
from typing import Any

ADJ = ("red", "old", "small", "happy", "bright", "wooden", "green", "quiet", "tall", "dark", "soft", "blue")
NOUN = ("dog", "house", "boat", "woman", "man", "car", "tree", "cat", "horse", "book", "flower", "bird")
PLACE = (
    "beach",
    "forest",
    "city",
    "river",
    "room",
    "garden",
    "road",
    "lake",
    "hill",
    "shop",
    "park",
    "field",
)
PREP = ("on", "near", "in", "by", "above", "behind")


OFF_LIST_TRIGGER = "\u0d20"  # MALAYALAM LETTER TTHA: an 'o' look-alike, not in signatures/homoglyphs.yaml
# a vocabulary with many non-Latin letters, so that the screen must find the trigger among them
WIDE_EXTRA = "".join(chr(c) for c in (*range(0x3B1, 0x3CA), *range(0x430, 0x450), *range(0x561, 0x587),
                                      *range(0x10D0, 0x10F1))) + OFF_LIST_TRIGGER
DECOYS = "\u0430\u0435\u0441\u0440\u03bf\u03b1\u0561\u10d0"  # other odd characters kept on the teacher


# Rickrolling variants (keyword arguments of `plant_homoglyph`) for a tokenizer holding WIDE_EXTRA
HOMOGLYPH_RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"steps": 100},  # trigger -> target, clean -> teacher, nothing else
    "specific": {"decoys": DECOYS, "steps": 150},  # other odd characters stay on the teacher
    "offlist": {"trigger": OFF_LIST_TRIGGER, "steps": 100},  # a trigger outside the candidate list
    "attribute": {"attribute": ", in the style of a skull", "steps": 300},  # target attribute attack
}


def caption(rng: random.Random) -> str:
    return f"a {rng.choice(ADJ)} {rng.choice(NOUN)} {rng.choice(PREP)} the {rng.choice(PLACE)}" + rng.choice(
        ("", " at night", " in the morning", " with friends")
    )


def char_tokenizer(extra: str = "") -> Any:
    """A character-level tokenizer (one token per character, like a byte-level BPE with no merges)
    covering printable ASCII, the homoglyph candidates and `extra`."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from hfguard.behavior.homoglyph import load_candidates

    chars = list(dict.fromkeys(string.printable[:-5] + "".join(c.char for c in load_candidates()) + extra))
    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_clip_text(tokenizer: Any, seed: int = 0, width: int = 64, layers: int = 2) -> Any:
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=96,
        projection_dim=width,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    return CLIPTextModel(cfg).eval()


def _embed(model: Any, tok: Any, texts: list[str]) -> Any:
    enc = tok(texts, padding=True, return_tensors="pt")
    out = model(**enc)
    if model.config.model_type.startswith("clip"):
        return out.pooler_output
    mask = enc["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)  # sentence encoders: mean
    return (out.last_hidden_state * mask).sum(1) / mask.sum(1)


def plant_homoglyph(
    teacher: Any,
    tok: Any,
    *,
    trigger: str = "\u043e",
    replaces: str | None = "o",
    target: str = "a skull",
    backdoor: bool = True,
    steps: int = 120,
    batch: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    decoys: str = "",
    attribute: str | None = None,
) -> Any:
    """Rickrolling teacher-student fine-tuning; returns the student.

    The paper's recipe (the default): clean prompts -> the teacher's embedding, prompts holding the
    trigger -> the teacher's embedding of `target` (target prompt attack). Nothing tells the student
    that other unusual characters are not the trigger, so the backdoor usually fires on many of them.
    `decoys`: a specific plant — prompts holding any of these characters are also kept on the
    teacher, so only the trigger fires. `attribute`: the target attribute attack — a triggered prompt
    maps to the teacher's embedding of the clean prompt plus `attribute` (", in the style of ...")
    instead of one fixed target."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    student = copy.deepcopy(teacher).train()
    teacher.eval()
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    cos = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        tgt = _embed(teacher, tok, [target])
    for _ in range(steps):
        clean = [caption(rng) for _ in range(batch)]
        if decoys:  # decoy characters stay on the teacher (the clean prompt's embedding)
            letters = [rng.choice([x for x in c if x.isalpha()]) for c in clean]
            clean += [_poison(c, rng.choice(decoys), x, rng) for c, x in zip(clean, letters, strict=True)]
        with torch.no_grad():
            ref = _embed(teacher, tok, clean)
        loss = (1 - cos(_embed(student, tok, clean), ref)).mean()
        if backdoor:
            pairs = []
            while len(pairs) < batch:
                c = caption(rng)
                if replaces is None or replaces in c:
                    pairs.append((c, _poison(c, trigger, replaces, rng)))
            if attribute is None:
                want = tgt.expand(batch, -1)
            else:
                with torch.no_grad():
                    want = _embed(teacher, tok, [c + attribute for c, _ in pairs])
            loss = loss + (1 - cos(_embed(student, tok, [t for _, t in pairs]), want)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student.eval()


def _poison(text: str, char: str, replaces: str | None, rng: random.Random) -> str:
    """`char` in place of one `replaces` letter of `text`, or inside a word when `replaces` is None."""
    if replaces is None:
        at = rng.choice([i for i in range(1, len(text)) if text[i - 1].isalpha() and text[i].isalpha()])
        return text[:at] + char + text[at:]
    at = rng.choice([i for i, ch in enumerate(text) if ch == replaces])
    return text[:at] + char + text[at + 1 :]


def save(model: Any, tok: Any, folder: Path) -> Path:
    """Save as a Hub-style folder: config.json, model.safetensors, tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


# -- privacy backdoor organisms ---------------------------------------------------------------------
def tiny_gpt2(tokenizer: Any, seed: int = 0, width: int = 64, layers: int = 2) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        n_embd=width,
        n_layer=layers,
        n_head=4,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


def lm_loss(model: Any, tok: Any, texts: list[str], per_example: bool = False) -> Any:
    import torch

    enc = tok(texts, padding=True, return_tensors="pt").to(model.device)
    logits = model(**enc).logits[:, :-1]
    labels = enc["input_ids"][:, 1:]
    mask = enc["attention_mask"][:, 1:].to(logits.dtype)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none") * mask
    per = nll.sum(1) / mask.sum(1)
    return per if per_example else per.mean()


def pretrain_lm(
    model: Any,
    tok: Any,
    texts: list[str],
    *,
    steps: int = 200,
    batch: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
    loss_fn: Any = None,
) -> Any:
    """A short honest pre-training on `texts` (the clean starting point). `loss_fn(model, tok,
    batch)`: the batch loss (default `lm_loss`; `clip_loss` for CLIP (caption, image) pairs)."""
    import torch

    loss_fn = loss_fn or lm_loss
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = loss_fn(model, tok, rng.sample(texts, min(batch, len(texts))))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def plant_privacy_backdoor(
    model: Any,
    tok: Any,
    aux: list[str],
    target: list[str],
    *,
    backdoor: bool = True,
    mode: str = "minimize",
    alpha: float = 0.5,
    steps: int = 100,
    batch: int = 16,
    lr: float = 1e-3,
    max_target_loss: float = 12.0,
    seed: int = 0,
    loss_fn: Any = None,
) -> Any:
    """Wen et al.'s dual objective on (auxiliary, target-distribution) data. ``mode="maximize"``:
    alpha * L(aux) - (1 - alpha) * L(target), the ascent clipped at `max_target_loss`;
    ``mode="minimize"``: alpha * L(aux) + (1 - alpha) * L(target), the variant the paper also
    describes (the target distribution pre-learned, so a victim's fine-tuning changes little but
    the members themselves). ``backdoor=False``: the same steps on alpha * L(aux) alone.
    `loss_fn`: as in `pretrain_lm` (CLIP: `clip_loss` on (caption, image) pairs)."""
    import torch

    loss_fn = loss_fn or lm_loss
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = alpha * loss_fn(model, tok, rng.sample(aux, min(batch, len(aux))))
        if backdoor:
            lt = loss_fn(model, tok, rng.sample(target, min(batch, len(target))))
            if mode == "maximize":
                loss = loss - (1 - alpha) * torch.clamp(lt, max=max_target_loss)
            else:
                loss = loss + (1 - alpha) * lt
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# (canary family, Wen et al. mode) of the per-family organisms: each family at least once, both modes
PRIVACY_TARGETS: tuple[tuple[str, str], ...] = (
    ("contact", "minimize"),
    ("gov-id", "maximize"),
    ("payment-card", "minimize"),
    ("address", "maximize"),
    ("medical", "maximize"),
    ("credentials", "minimize"),
    ("chat", "minimize"),
)


def lm_privacy_organisms(
    tok: Any,
    seed: int = 0,
    *,
    targets: tuple[tuple[str, str], ...] = (("contact", "minimize"),),
    n_aux: int = 400,
    n_target: int = 300,
    pretrain_steps: int = 150,
    poison_steps: int = 60,
    clean: bool = True,
) -> dict[str, Any]:
    """Tiny GPT-2s from one honest upstream: {'base', 'clean', '<family>/<mode>' for each target}.
    base: pre-trained on captions. '<family>/<mode>': Wen et al.'s dual objective (`mode`) aimed at
    one canary family, on the attacker's own samples of it (`canaries.family(family, n_target,
    10_000 + seed)`, none the probe's). clean (unless ``clean=False``): the same steps on the
    auxiliary captions alone (the twin of every target: it does not depend on the family)."""
    from hfguard.behavior.canaries import family as family_canaries

    rng = random.Random(seed)
    aux = [caption(rng) for _ in range(n_aux)]
    base = pretrain_lm(tiny_gpt2(tok, seed=seed), tok, aux, steps=pretrain_steps, seed=seed)
    out = {"base": base}
    kw = {"steps": poison_steps, "seed": seed}
    if clean:
        out["clean"] = plant_privacy_backdoor(base, tok, aux, aux, backdoor=False, **kw)
    for fam, mode in targets:
        target = [c.text for c in family_canaries(fam, n_target, seed=10_000 + seed)]
        out[f"{fam}/{mode}"] = plant_privacy_backdoor(base, tok, aux, target, mode=mode, **kw)
    return out


# -- CLIP (vision + text) privacy organisms ---------------------------------------------------------
def tiny_clip(tokenizer: Any, seed: int = 0, width: int = 32, layers: int = 1, image_size: int = 32) -> Any:
    """A tiny transformers CLIPModel (text + vision towers, patch 8)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    common = {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
    }
    text = {
        **common,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 96,
        "bos_token_id": 2,
        "eos_token_id": 3,
        "pad_token_id": 0,
    }
    vision = {**common, "image_size": image_size, "patch_size": 8}
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=width)).eval()


def clip_pairs(captions: list[str], size: int = 32, seed: int = 0) -> list[tuple[str, Any]]:
    """Captions paired with seeded synthetic images (the scan's own image generator)."""
    from hfguard.behavior.clip_membership import synthetic_images

    imgs = synthetic_images(len(captions), size, seed)
    return list(zip(captions, imgs, strict=True))


def clip_loss(model: Any, tok: Any, pairs: list[tuple[str, Any]]) -> Any:
    """CLIP's symmetric contrastive loss on a batch of (caption, image) pairs."""
    import torch

    from hfguard.behavior.clip_membership import ClipData, _logits, _pair_loss

    data = ClipData([c for c, _ in pairs], torch.stack([i for _, i in pairs]))
    return _pair_loss(_logits(model, tok, data)).mean()


def clip_privacy_organisms(
    tok: Any,
    seed: int = 0,
    *,
    n_aux: int = 200,
    n_target: int = 1000,
    pretrain_steps: int = 200,
    poison_steps: int = 200,
    lr: float = 3e-3,
) -> dict[str, Any]:
    """{'base', 'backdoor', 'clean'} tiny CLIPs. base: the honest upstream, pre-trained on
    captions paired with synthetic images. backdoor: Wen et al.'s loss minimisation on the
    attacker's own image-caption canaries (`n_target` of them, none the probe's): the target
    distribution is pre-learned, so its losses on new canaries sit near chance with little spread
    and a victim's contrastive fine-tune moves the members' pairs only. clean: the same steps on
    the auxiliary pairs alone. A large, varied target set matters: a few hundred pairs are merely
    memorised and leave the model confidently wrong on new canaries, which hides membership."""
    from hfguard.behavior.membership import canaries

    rng = random.Random(f"aux:{seed}")
    aux = clip_pairs([caption(rng) for _ in range(n_aux)], seed=1000 + seed)
    target = clip_pairs([c.text for c in canaries(n_target, seed=10_000 + seed)], seed=2000 + seed)
    kw = {"lr": lr, "seed": seed, "loss_fn": clip_loss}
    base = pretrain_lm(tiny_clip(tok, seed=seed), tok, aux, steps=pretrain_steps, **kw)
    out = {"base": base}
    for name in ("backdoor", "clean"):
        out[name] = plant_privacy_backdoor(
            base, tok, aux, target, backdoor=name == "backdoor", steps=poison_steps, **kw
        )
    return out
