"""Loaders for the behavior tier: transformers text encoders / causal LMs and open_clip models.

Safety rules, in this order: weights come from safetensors; failing that from torch zip files read
with ``weights_only=True``; raw pickles and legacy torch files are refused (`RefusedWeights`).
``trust_remote_code`` is never set, so a config whose architecture needs custom code is simply not
loadable here; tokenizers load through their JSON/vocab files.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfguard.sniff import SAFETENSORS, WEIGHT_SUFFIXES, ZIP, sniff
from hfguard.target import Target

# files a loader may need from a model folder (tokenizers: json, txt vocabularies, sentencepiece)
NEEDED_SUFFIXES = (*WEIGHT_SUFFIXES, ".json", ".txt", ".model", ".tiktoken")

ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "mpnet",
    "albert",
    "electra",
    "deberta",
    "deberta-v2",
    "camembert",
    "modernbert",
    "nomic_bert",
    "e5",
    "xlm_roberta",
}


class BehaviorUnavailable(RuntimeError):
    """torch / transformers (or open_clip) are not importable, yet the behavior tier was asked for."""


class RefusedWeights(RuntimeError):
    """Only pickle-based weights that cannot be read safely: the loader will not touch them."""


def require_deps(*modules: str) -> None:
    import importlib

    missing = []
    for m in ("torch", "transformers", "numpy", "scipy", *modules):
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        raise BehaviorUnavailable(f"missing {', '.join(missing)}; install hfguard[behavior]")


def pick_device(option: str | None = "auto") -> str:
    import torch

    option = (option or "auto").lower()
    if option == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return option


@dataclass
class ModelDir:
    """One model folder of a target: its config and the kind of model it holds."""

    root: Path  # a local folder (the real one, or links to materialized files)
    name: str  # display name (the folder inside the target)
    kind: str  # clip-text | clip | causal-lm | encoder | open_clip | unsupported
    config: dict[str, Any] = field(default_factory=dict)


def classify(config: dict[str, Any], open_clip_cfg: bool = False) -> str:
    if open_clip_cfg:
        return "open_clip"
    mt = str(config.get("model_type", "")).lower()
    archs = [str(a) for a in config.get("architectures") or []]
    if mt in ("clip_text_model",):
        return "clip-text"
    if mt in ("clip",):
        return "clip"
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or mt in (
        "gpt2",
        "gpt_neo",
        "gpt_neox",
        "llama",
        "opt",
        "pythia",
    ):
        return "causal-lm"
    if mt in ENCODER_TYPES:
        return "encoder"
    return "unsupported"


def weights_format(folder: Path) -> str:
    """'safetensors', 'torch-zip', 'none', or raises RefusedWeights for pickle-only weights."""
    files = [p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    if not files:
        return "none"
    fmts = {}
    for p in files:
        with open(p, "rb") as fh:
            fmts[p.name] = sniff(fh.read(600), p.name, p.stat().st_size)
    if any(f == SAFETENSORS for f in fmts.values()):
        return "safetensors"
    if any(f == ZIP for f in fmts.values()):
        return "torch-zip"
    raise RefusedWeights(
        "only pickle-based weights ("
        + ", ".join(f"{k}: {v}" for k, v in fmts.items())
        + "); the behavior tier loads safetensors or torch zip files (weights_only) only"
    )


@contextmanager
def model_dirs(target: Target) -> Iterator[list[ModelDir]]:
    """The model folders of a target (folders holding config.json or open_clip_config.json), each
    as a local folder: local targets are used in place, others are materialized into a temp folder
    of links (only config, tokenizer and weight files are fetched)."""
    groups: dict[str, list] = {}
    for f in target.files:
        folder, _, base = f.path.rpartition("/")
        groups.setdefault(folder, []).append((base, f))
    found = [k for k, v in groups.items() if any(b in ("config.json", "open_clip_config.json") for b, _ in v)]
    with tempfile.TemporaryDirectory(prefix="hfguard-behavior-") as tmp:
        out = []
        for i, folder in enumerate(sorted(found, key=lambda k: (k.count("/"), k))):
            members = groups[folder]
            roots = {tf.local_path.parent for _, tf in members if tf.local_path is not None}
            if len(roots) == 1 and all(tf.local_path is not None for _, tf in members):
                root = roots.pop()
            else:
                root = Path(tmp, str(i))
                root.mkdir()
                for base, tf in members:
                    if base.endswith(NEEDED_SUFFIXES):
                        os.symlink(tf.materialize(), root / base)
            out.append(describe(root, folder or target.name))
        yield out


def describe(root: Path, name: str | None = None) -> ModelDir:
    oc = root / "open_clip_config.json"
    cfg_path = root / "config.json"
    config = json.loads((oc if oc.is_file() else cfg_path).read_text(encoding="utf-8"))
    return ModelDir(root=root, name=name or str(root), kind=classify(config, oc.is_file()), config=config)


# -- transformers ---------------------------------------------------------------------------------
@contextmanager
def _unpickler_refusals(root: Path) -> Iterator[None]:
    """The weights_only unpickler rejecting a torch file means it holds more than tensors."""
    import pickle

    try:
        yield
    except pickle.UnpicklingError as exc:
        first = str(exc).split(".", 1)[0]
        raise RefusedWeights(
            f"{root}: torch weights hold objects the weights_only unpickler refuses "
            f"({first}); nothing was executed"
        ) from None


def _pretrained_kwargs(root: Path) -> dict[str, Any]:
    fmt = weights_format(root)
    if fmt == "none":
        raise RefusedWeights(f"{root}: no weight files")
    kw: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    kw["use_safetensors"] = fmt == "safetensors"
    return kw


def load_tokenizer(root: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)


class TextEncoder:
    """Texts -> L2-normalised embeddings, whatever the model family."""

    def __init__(
        self,
        kind: str,
        model: Any,
        tokenizer: Any,
        device: str,
        name: str = "",
        max_length: int = 77,
        batch_size: int = 64,
    ) -> None:
        self.kind, self.model, self.tokenizer, self.device = kind, model, tokenizer, device
        self.name, self.max_length, self.batch_size = name, max_length, batch_size
        self.on_batch: Callable[[int], None] = lambda n: None  # progress / budget, per batch of texts

    def token_ids(self, text: str) -> tuple[int, ...]:
        if self.kind == "open_clip":
            ids = self.tokenizer([text])[0].tolist()
            return tuple(i for i in ids if i != 0)
        return tuple(self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"])

    def encode(self, texts: Sequence[str]) -> Any:
        import torch

        # similar lengths batched together: less padding
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        outs = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = [texts[j] for j in order[i : i + self.batch_size]]
                outs.append(self._encode(batch).float().cpu())
                self.on_batch(len(batch))
        if not outs:
            return torch.zeros(0, 1)
        emb = torch.empty_like(torch.cat(outs))
        emb[torch.tensor(order)] = torch.cat(outs)
        return torch.nn.functional.normalize(emb, dim=-1)

    def _encode(self, batch: list[str]) -> Any:
        if self.kind == "open_clip":
            return self.model.encode_text(self.tokenizer(batch).to(self.device))
        enc = self.tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        if self.kind == "clip":
            feats = self.model.get_text_features(**enc)
            return getattr(feats, "pooler_output", feats)  # transformers 5: an output object; 4.x: a tensor
        out = self.model(**enc)
        if self.kind == "clip-text":
            proj = getattr(out, "text_embeds", None)  # CLIPTextModelWithProjection
            return proj if proj is not None else out.pooler_output
        mask = enc["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)  # mean pooling
        return (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)


def load_text_encoder(md: ModelDir, device: str = "cpu") -> TextEncoder:
    if md.kind == "open_clip":
        return load_open_clip(f"local-dir:{md.root}", device, name=md.name)
    import transformers as tf

    archs = md.config.get("architectures") or []
    cls: Any  # a transformers model class
    if md.kind == "clip-text":
        cls = tf.CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in archs else tf.CLIPTextModel
    elif md.kind == "clip":
        cls = tf.CLIPModel
    elif md.kind == "encoder":
        cls = tf.AutoModel
    else:
        raise ValueError(f"{md.name}: not a text encoder ({md.kind})")
    model, tok = load_with_tokenizer(cls, md, device)
    max_len = int(
        md.config.get("max_position_embeddings")
        or md.config.get("text_config", {}).get("max_position_embeddings")
        or 77
    )
    return TextEncoder(md.kind, model, tok, device, name=md.name, max_length=min(max_len, 512))


LM_DTYPES = ("auto", "float32", "bfloat16")


def lm_dtype(device: str, choice: str = "auto") -> str:
    """The dtype a causal LM is loaded in: bfloat16 on CUDA (half the memory of fp32: a 7B LM fits
    one GPU), float32 on CPU (bf16 matmuls are slow there); `choice` other than "auto" wins."""
    if choice not in LM_DTYPES:
        raise ValueError(f"lm-dtype {choice!r}: one of {', '.join(LM_DTYPES)}")
    if choice != "auto":
        return choice
    return "bfloat16" if device.startswith("cuda") else "float32"


def load_causal_lm(md: ModelDir, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) in `dtype` (see `lm_dtype`); the tokenizer gets a pad token when it has
    none (for batching)."""
    from transformers import AutoModelForCausalLM

    return load_with_tokenizer(AutoModelForCausalLM, md, device, dtype)


# the last model loaded, so that the behavior checks of one scan share it (checks never modify a
# loaded model: victims are deep copies or LoRA adapters beside it); keyed by the weights' identity,
# one entry at most
_LAST: dict[tuple, tuple[Any, Any]] = {}


def _weights_key(model_class: Any, md: ModelDir, device: str, dtype: str | None) -> tuple:
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in md.root.iterdir() if p.is_file())
    return (str(md.root.resolve()), getattr(model_class, "__name__", str(model_class)), device, dtype,
            tuple(stats))


def load_with_tokenizer(model_class: Any, md: ModelDir, device: str = "cpu",
                        dtype: str | None = None) -> tuple[Any, Any]:
    """A transformers `model_class` from md (safetensors / weights_only; pickles refused) in
    `dtype` (None: transformers' default) and its tokenizer, given a pad token when it has none
    (for batching). Loaded once for all checks."""
    key = _weights_key(model_class, md, device, dtype)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = _load_with_tokenizer(model_class, md, device, dtype)
    return _LAST[key]


def _load_with_tokenizer(model_class: Any, md: ModelDir, device: str, dtype: str | None) -> tuple[Any, Any]:
    import torch

    kw = _pretrained_kwargs(md.root)
    if dtype:
        kw["dtype"] = getattr(torch, dtype)
    with _unpickler_refusals(md.root):
        model = model_class.from_pretrained(str(md.root), **kw)
    model = model.to(device).eval()
    tok = load_tokenizer(md.root)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return model, tok


# -- open_clip ------------------------------------------------------------------------------------
def load_open_clip(spec: str, device: str = "cpu", name: str = "") -> TextEncoder:
    """`spec`: ``local-dir:PATH`` (open_clip_config.json + weights), ``hf-hub:org/name``, or
    ``ARCH:FILE`` (a built-in architecture name and a local weights file)."""
    try:
        import open_clip
    except ImportError as exc:
        raise BehaviorUnavailable(f"open_clip is not importable ({exc}); install open_clip_torch") from None
    arch, file = spec, None
    if spec.startswith("local-dir:"):
        weights_format(Path(spec[len("local-dir:") :]))  # refuses pickle-only folders before open_clip looks
    elif not spec.startswith("hf-hub:"):
        arch, _, file = spec.partition(":")
        if not file.endswith(".safetensors"):
            with open(file, "rb") as fh:
                if sniff(fh.read(600), file) != ZIP:
                    raise RefusedWeights(f"{file}: not safetensors or a torch zip file")
    with _unpickler_refusals(Path(file or spec)):
        model = open_clip.create_model(arch, pretrained=file, device=device, weights_only=True)
    tok = open_clip.get_tokenizer(arch)
    return TextEncoder("open_clip", model.eval(), tok, device, name=name or spec)
