"""Diff against the declared base model: which tensors changed, by how much, and in what shape.

An honest fine-tune moves most tensors a little and spreads the change; a surgical edit (ROME-style,
as in PoisonGPT) changes a few tensors, with the change concentrated in one singular direction or a
few rows; trigger-word surgery rewrites a few token-embedding rows.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hfguard.budget import Budget
from hfguard.card import card_metadata, declared_bases
from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Severity, plot_evidence
from hfguard.robust import MAD_TO_SIGMA, robust_scale
from hfguard.target import Target
from hfguard.weights import compiled
from hfguard.weights.analyze import EMBEDDING
from hfguard.weights.defaults import DIFF_DEFAULTS
from hfguard.weights.layers import role_of
from hfguard.weights.names import agree, pair_tensors, stored_alike
from hfguard.weights.progress import weight_bytes
from hfguard.weights.shards import (
    equal_values,
    in_read_order,
    model_checkpoints,
    pair_meter,
    same_bytes,
    shard_findings,
)
from hfguard.weights.stats import Backend, backend_for
from hfguard.weights.stream import plan_reads
from hfguard.weights.tensors import Checkpoint, TensorMeta, WeightsFormatError, load_tensor
from hfguard.weights.traps import NORM_GAIN, POSITIONAL, silenced

MAX_PLOTTED_TENSORS = 200   # bars in the report figure; every change is in the evidence


def declared_base(target: Target) -> str | None:
    """The first `base_model` of the model card (Hub) or the README.md front matter (local folders)."""
    bases = declared_bases(card_metadata(target))
    return bases[0] if bases else None


@dataclass
class TensorDelta:
    name: str
    rel: float                      # ||delta|| / ||base||
    changed_share: float            # entries that differ at all
    top1_energy: float | None = None
    topk_energy: float | None = None
    rows_90: int | None = None      # fewest rows that hold 90% of ||delta||^2
    rows: int | None = None
    edited_rows: list[int] = field(default_factory=list)
    surgical_shape: str | None = None   # "low-rank" | "row-sparse" | "sparse" | None (spread)
    spectral_row_step: int = 1      # the energies were measured on every k-th row of the delta

    def classify(self, th: dict[str, Any]) -> None:
        self.surgical_shape = None
        if self.top1_energy is not None and self.top1_energy >= th["low-rank-energy"]:
            self.surgical_shape = "low-rank"
        elif self.rows_90 is not None and self.rows and \
                self.rows_90 <= max(1, th["row-sparse-share"] * self.rows):
            self.surgical_shape = "row-sparse"
        elif self.rows is None and self.changed_share <= th["row-sparse-share"]:
            self.surgical_shape = "sparse"

    def evidence(self) -> dict[str, Any]:
        ev = {"tensor": self.name, "relative_change": _r(self.rel), "changed_share": _r(self.changed_share),
              "shape_of_change": self.surgical_shape}
        if self.top1_energy is not None:
            ev.update(top1_energy=_r(self.top1_energy), top4_energy=_r(self.topk_energy))
            if self.spectral_row_step > 1:
                ev.update(spectral_row_step=self.spectral_row_step)
        if self.rows_90 is not None:
            ev.update(rows_holding_90pct=self.rows_90, rows=self.rows)
        return ev


def _r(x: float | None) -> float | None:
    # 4 significant digits; None for inf/nan (JSON has neither), e.g. the change of a zero-init bias
    return None if x is None or not math.isfinite(x) else float(f"{x:.4g}")


def tensor_delta(name: str, w0: np.ndarray, w1: np.ndarray, be: Backend, th: dict[str, Any],
                 out: np.ndarray | None = None) -> TensorDelta:
    """How w1 differs from w0. `out`: a flat float32 buffer of at least w0.size for the delta."""
    from hfguard.weights.stats import _spectral

    # the one full-size temporary: memory stays ~3x the largest tensor
    fused = compiled.delta_sums(w0, w1, out) if be.compiled and out is not None else None
    d: np.ndarray
    if fused is not None and out is not None:   # the delta, its norm, the base's, changes, row energies
        d = out[: w0.size].reshape(w0.shape)
        dn2, wn2, changed, e = fused
    else:
        d = w1 - w0 if out is None or out.size < w0.size else \
            np.subtract(w1, w0, out=out[: w0.size].reshape(w0.shape))
        flat = d.reshape(-1)
        dn2, changed, e = float(np.dot(flat, flat)), int(np.count_nonzero(flat)), None   # NaN counts
        wn2 = float(np.dot(w0.reshape(-1), w0.reshape(-1))) if math.isfinite(dn2) else 0.0
    if not math.isfinite(dn2):   # NaN/Inf in either side: weights.anomalies reports them
        return TensorDelta(name, math.inf, changed / max(d.size, 1))
    wn = math.sqrt(wn2)
    td = TensorDelta(name, math.sqrt(dn2) / wn if wn > 0 else math.inf, changed / max(d.size, 1))
    if d.ndim == 2 and min(d.shape) >= 2 and dn2 > 0:
        if e is None:
            e = np.einsum("ij,ij->i", d, d).astype(np.float64)
        cum = np.cumsum(np.sort(e)[::-1])
        td.rows, td.rows_90 = int(d.shape[0]), int(np.searchsorted(cum, 0.9 * cum[-1]) + 1)
        # a larger delta is measured on every k-th row (a copy of at most the budget): a low-rank
        # change stays low-rank on a subset of its rows, and above the budget (70B-class MLPs, 180M+
        # entries) a ROME edit was otherwise told from a dense one only by its rows
        step = max(1, math.ceil(d.size / th["diff-spectral-max-elements"]))
        sub_n2 = float(e[::step].sum())
        if d.shape[0] // step >= 2 and sub_n2 > 0:
            sub = d if step == 1 else np.ascontiguousarray(d[::step])
            sv = np.asarray(_spectral(be.put(sub), be, sub_n2)["sigma"])
            td.top1_energy, td.topk_energy = float(sv[0] ** 2 / sub_n2), float((sv ** 2).sum() / sub_n2)
            td.spectral_row_step = step
        if EMBEDDING.search(name) and not POSITIONAL.search(name) and d.shape[0] >= 16:
            base_rows = np.sqrt(np.einsum("ij,ij->i", w0, w0, dtype=np.float64))
            rr = np.sqrt(e) / np.maximum(base_rows, 1e-12)
            cut = max(th["embedding-row-rel"], th["embedding-row-vs-median"] * float(np.median(rr)))
            td.edited_rows = np.flatnonzero(rr >= cut).tolist()
    td.classify(th)
    return td


@dataclass
class DiffResult:
    compared: int = 0
    deltas: list[TensorDelta] = field(default_factory=list)     # changed tensors only
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: list[dict[str, str]] = field(default_factory=list)  # {"base": name, "model": name}
    rounding_only: int = 0    # tensors that differ only by the model's storage rounding (not changed)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)
    dtype_mismatch: list[str] = field(default_factory=list)
    extended: list[dict[str, Any]] = field(default_factory=list)   # embeddings with appended rows
    silenced: list[dict[str, Any]] = field(default_factory=list)   # norm gains live in base, ~0 here
    roles: dict[str, int] = field(default_factory=dict)         # role -> layers holding it (base)
    blocks: dict[int, set[str]] = field(default_factory=dict)   # block index -> its tensors (base)


def diff_checkpoints(base: Checkpoint, tgt: Checkpoint, be: Backend, th: dict[str, Any],
                     budget: Budget) -> DiffResult:
    return TensorDiffer(base, tgt, be, th).run(budget)


class TensorDiffer:
    """One checkpoint's diff against the base, a tensor at a time: `tensor(name)` for each name of
    the model's in `todo`, in any order and from several threads (the statistics pass feeds it the
    tensors it reads, so a remote shard is fetched once for both checks), then `result()`. What
    needs no values (added, removed, reshaped, dtype) is decided here from the headers.

    Tensors are paired with the base's as names.pair_tensors pairs them, and named as the model
    names them. A pair by shape only (a tensor stored under another name) is read like the others:
    if the values agree it is a rename; if not, it stays removed + added, not diffed as a change:
    the pairing was a guess that the values did not confirm, and a missing base tensor is a medium
    finding whatever the rest of the diff looks like (an edited head stored under another name is
    not lost in a fine-tune's changes)."""

    def __init__(self, base: Checkpoint, tgt: Checkpoint, be: Backend, th: dict[str, Any]) -> None:
        self.base, self.tgt, self.be, self.th = base, tgt, be, th
        pairing = pair_tensors(base.tensors, tgt.tensors)
        # conservative until the values say otherwise: a rename leaves these lists when confirmed
        res = self.res = DiffResult(added=pairing.only_b, removed=pairing.only_a)
        # the model's name -> the base's: named pairs, then the pairs by shape (`renames`)
        self.base_name = {nb: na for na, nb in pairing.named}
        as_named = {na: nb for na, nb in pairing.named}   # roles as the deltas name them: the model's
        for name, meta in base.tensors.items():
            role, idx = role_of(as_named.get(name, name))
            if idx is not None and meta.is_float and meta.numel:
                res.roles[role] = res.roles.get(role, 0) + 1
                res.blocks.setdefault(idx, set()).add(name)
        self.renames = {nb: na for na, nb in pairing.by_shape}
        named = [(self.base.tensors[na], tgt.tensors[nb]) for na, nb in pairing.named]
        vocab = {(m0.shape[0], m1.shape[0]) for m0, m1 in named
                 if _appended_rows(m1.name, m0.shape, m1.shape)}
        self.todo: dict[str, int | None] = {}   # name -> the axis it grew along (None: same shape)
        for m0, m1 in named:
            name, grown = m1.name, None
            if m0.shape != m1.shape:
                grown = _grown_axis(m0.shape, m1.shape, vocab)
                if grown is None:
                    res.shape_mismatch.append({"tensor": name, "base": list(m0.shape),
                                               "model": list(m1.shape)})
                    continue
                # vocabulary extension: the base's part is compared, the appended entries are noted
                res.extended.append({"tensor": name, "base": list(m0.shape), "model": list(m1.shape)})
            if m0.dtype != m1.dtype:
                res.dtype_mismatch.append(name)
            if m0.is_float and m1.is_float and m0.numel:
                self.todo[name] = grown
        res.compared = len(self.todo)
        res.shape_mismatch.sort(key=lambda s: s["tensor"])
        res.extended.sort(key=lambda s: s["tensor"])
        res.dtype_mismatch.sort()
        self.base_name.update(self.renames)
        self.todo.update(dict.fromkeys(self.renames))
        self.numel = max((m.numel for n in self.todo for m in self.pair(n)), default=0)
        self.error: WeightsFormatError | None = None
        self._local = threading.local()
        self._lock = threading.Lock()

    def pair(self, name: str) -> tuple[TensorMeta, TensorMeta]:
        """(the base's tensor, the model's) for the model's tensor `name`."""
        return self.base.tensors[self.base_name[name]], self.tgt.tensors[name]

    def run(self, budget: Budget) -> DiffResult:
        """Every tensor of `todo`, read here: in the model's file order, shard by shard, each
        tensor of each side once."""
        order = in_read_order(list(self.todo), self.tgt)
        plan_reads(m for n in order for m in self.pair(n))
        for name in order:
            budget.tick(f"diffing {name}", item=name)
            self.tensor(name)
        return self.result()

    def tensor(self, name: str, w1: np.ndarray | None = None) -> None:
        """Compare one tensor. `w1`: the model's tensor as float32 if the caller has it loaded."""
        if name not in self.todo:
            return
        grown = self.todo[name]
        m0, m1 = self.pair(name)
        if name in self.renames:
            self._rename(m0, m1, w1)
            return
        if grown is None and same_bytes(m0, m1):   # untouched: decided on raw bytes, chunk by chunk
            return
        scratch = self._scratch()
        w0 = scratch.load(m0, 0)
        w1 = scratch.load(m1, 1) if w1 is None else w1
        if grown is not None:
            w1 = w1[(slice(None),) * grown + (slice(0, m0.shape[grown]),)]
        if equal_values(w0, w1):
            return
        if stored_alike(m0, m1, w0, w1):   # the same values in a narrower dtype or quantized codes
            with self._lock:
                self.res.rounding_only += 1
            return
        delta = tensor_delta(name, w0, w1, self.be, self.th, out=scratch.buffer(2))
        gone = None
        if w0.ndim == 1 and NORM_GAIN.search(name):
            rel = self.th["silenced-gain-rel"]
            new = np.flatnonzero(silenced(w1, rel) & ~silenced(w0, rel))
            if new.size:
                gone = {"tensor": name, "count": int(new.size), "indices": new[:32].tolist()}
        with self._lock:
            self.res.deltas.append(delta)
            if gone is not None:
                self.res.silenced.append(gone)

    def _scratch(self) -> _Scratch:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:   # one set of buffers per thread
            scratch = self._local.scratch = _Scratch(self.numel)
        return scratch

    def _rename(self, m0: TensorMeta, m1: TensorMeta, w1: np.ndarray | None) -> None:
        """A pair by shape: the same tensor under another name if the values agree (up to the
        round trip between the two dtypes), else left removed + added."""
        if not same_bytes(m0, m1):
            scratch = self._scratch()
            w1 = scratch.load(m1, 1) if w1 is None else w1
            if not agree(scratch.load(m0, 0), w1, m0.dtype, m1.dtype):
                return
        with self._lock:
            self.res.removed.remove(m0.name)
            self.res.added.remove(m1.name)
            self.res.renamed.append({"base": m0.name, "model": m1.name})
            self.res.compared += 1

    def feed(self, meta: TensorMeta, w1: np.ndarray) -> None:
        """`tensor`, for the statistics pass that has the model's tensor loaded: a tensor that
        cannot be read here fails the diff (weights.base_diff reports it), never the statistics."""
        if self.error is None:
            try:
                self.tensor(meta.name, w1)
            except WeightsFormatError as exc:
                self.error = exc

    def outcome(self) -> DiffResult | WeightsFormatError:
        return self.error if self.error is not None else self.result()

    def result(self) -> DiffResult:
        self.res.deltas.sort(key=lambda d: d.name)   # reports list tensors by name, whatever the read order
        self.res.silenced.sort(key=lambda s: s["tensor"])
        self.res.renamed.sort(key=lambda r: r["model"])
        return self.res


class _Scratch:
    """Three float32 buffers (base side, model side, delta) reused from tensor to tensor: fresh
    pages for every tensor cost more than the arithmetic (a 180 MB bfloat16 pair: 1.6s -> 0.6s).
    Untouched pages cost nothing, so sizing them for the largest tensor is free until needed."""

    def __init__(self, numel: int) -> None:
        self.numel = numel
        self.bufs: list[np.ndarray | None] = [None, None, None]

    def buffer(self, i: int) -> np.ndarray:
        buf = self.bufs[i]
        if buf is None:
            buf = self.bufs[i] = np.empty(self.numel, np.float32)
        return buf

    def load(self, meta: TensorMeta, i: int) -> np.ndarray:
        """The tensor as float32: the file's pages when it is float32 in place, else widened into buffer i."""
        return load_tensor(meta, copy=False, out=None if meta.mapped_as_is else self.buffer(i))


def _grown_axis(s0: tuple[int, ...], s1: tuple[int, ...], vocab: set[tuple[int, int]]) -> int | None:
    """The one axis along which a tensor grew from the old to the new vocabulary size (token
    embeddings, a tied or untied head, its bias), if that is the only difference."""
    if len(s0) != len(s1):
        return None
    axes = [i for i, (a, b) in enumerate(zip(s0, s1, strict=True)) if a != b]
    return axes[0] if len(axes) == 1 and (s0[axes[0]], s1[axes[0]]) in vocab else None


def _appended_rows(name: str, s0: tuple[int, ...], s1: tuple[int, ...]) -> bool:
    """Token embeddings (or the tied head) grown by rows only: `resize_token_embeddings`."""
    return (bool(EMBEDDING.search(name)) and not POSITIONAL.search(name) and len(s0) == len(s1) == 2
            and s1[0] > s0[0] and s0[1:] == s1[1:])


def _primary(ckpts: list[Checkpoint]) -> Checkpoint | None:
    # safetensors first (what loaders prefer), then the one with the most tensors
    return max(ckpts, key=lambda c: (c.kind == "safetensors", len(c.tensors)), default=None)


@dataclass
class DiffBase:
    """The base a scan diffs against: `spec` as given or declared (None: neither), and its checkpoints."""

    spec: str | None
    explicit: bool = False           # --base (an unavailable one is ERROR), not the card's base_model
    error: str | None = None         # why it could not be resolved
    ckpts: list[Checkpoint] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    ref: Checkpoint | None = None    # the checkpoint diffed against

    @property
    def label(self) -> str:
        """`ref` as progress lines name it: with the base's spec where the name alone does not say
        which model it is (a Hub base's files are named as in its repo, like the model's own)."""
        name = self.ref.name if self.ref is not None else ""
        return name if not self.spec or self.spec in name else f"{self.spec}: {name}"


def resolve_base(target: Target, ctx: ScanContext, stream: Any) -> DiffBase:
    """--base, else the card's base_model, resolved; its shards' headers read through `stream`."""
    from hfguard.hub.resolve import ModelSpecError, resolve_model

    explicit = ctx.options.get("base")
    spec = explicit or declared_base(target)
    if not spec:
        return DiffBase(None)
    try:
        base = resolve_model(spec)
    except ModelSpecError as exc:
        return DiffBase(spec, bool(explicit), error=f"base: {exc}")
    if base.source == "hub":   # its shards are downloaded too: a default Hub deadline allows for them
        from hfguard.hub.http import grow_for_download

        grow_for_download(sum(f.size for f in base.files), f"the base {spec}", ctx.progress)
    ckpts, failed = model_checkpoints(base, stream)
    return DiffBase(spec, bool(explicit), ckpts=ckpts, failed=failed, ref=_primary(ckpts))


def diff_thresholds(ctx: ScanContext, th: dict[str, Any]) -> dict[str, Any]:
    """The diff's thresholds from the policy, over the weights tier's `th`."""
    return {**DIFF_DEFAULTS, **{k: ctx.threshold("weights", k, v) for k, v in DIFF_DEFAULTS.items()}, **th}


def diff_findings(check: Check, target: Target, ctx: ScanContext, th: dict[str, Any],
                  session: Any) -> Iterator[Finding]:
    """`session` (weights.session.WeightsSession): the model's and the base's checkpoints, and the
    diffs the statistics pass already made on its way through the model."""
    th = diff_thresholds(ctx, th)
    base = session.base(target, ctx)
    if not base.spec:
        yield check.finding("weights/no-base", Severity.INFO,
                            "no base model declared (card base_model) or given (--base): diff skipped")
        return
    if base.error is not None:
        yield check.finding("weights/base-unavailable", Severity.MEDIUM if base.explicit else Severity.LOW,
                            base.error, error=base.explicit, evidence={"base": base.spec})
        return
    yield from _diff_target(check, target, base, ctx, th, session)


def _diff_target(check: Check, target: Target, base: DiffBase, ctx: ScanContext, th: dict[str, Any],
                 session: Any) -> Iterator[Finding]:
    spec, explicit, ref = base.spec or "", base.explicit, base.ref
    mine, _ = session.checkpoints(target)
    if not mine or ref is None:
        what = "the model" if not mine else f"base {spec}"
        yield check.finding("weights/base-unavailable", Severity.MEDIUM if explicit else Severity.LOW,
                            f"no readable checkpoint in {what}: diff skipped", error=explicit,
                            evidence={"base": spec, "unreadable": base.failed})
        return
    try:
        be = backend_for(str(ctx.options.get("device") or "auto"), weight_bytes([*mine, ref]))
    except (RuntimeError, ValueError) as exc:
        yield check.finding("weights/device-unavailable", Severity.MEDIUM, str(exc), error=True)
        return
    from hfguard.weights.analyze import single_threaded_blas

    # every weights file of the model: a loader may pick any of them (pytorch_model.bin beside
    # model.safetensors), so a clean one must not vouch for an edited one
    if ref.problems:   # a base with a missing shard or an inconsistent index: a partial reference
        yield from shard_findings(check, ref.problems, f"base {spec}: {ref.name}")
    for tgt in mine:
        done = session.diffs.get(tgt.name)
        if done is None and session.aborted is not None:
            raise session.aborted   # the statistics pass that was diffing on the way gave up
        if done is not None:
            ctx.progress(f"weights: diff {tgt.name} vs {base.label}: read on the statistics pass")
        else:
            differ = TensorDiffer(ref, tgt, be, th)
            meter = pair_meter(f"weights: diff {tgt.name} vs {base.label}",
                               [differ.pair(n) for n in differ.todo], ctx.budget_seconds, ctx.progress)
            meter.progress(meter.line())
            try:
                with single_threaded_blas():
                    done = differ.run(meter)
                meter.finish()
            except WeightsFormatError as exc:
                done = exc
        if isinstance(done, WeightsFormatError):   # a shard that could not be fetched or read: ERROR
            yield check.finding("weights/unreadable", Severity.MEDIUM, f"weights tier cannot read {done}",
                                file=tgt.name, error=True)
            continue
        yield from judge(check, done, tgt.name, spec, th)


def judge(check: Check, res: DiffResult, file: str, spec: str, th: dict[str, Any]) -> Iterator[Finding]:
    f = lambda rule, sev, msg, **kw: check.finding(rule, sev, msg, file=file, **kw)  # noqa: E731
    for names, rule, sev, what in (
            (res.shape_mismatch, "base-shape-mismatch", Severity.MEDIUM,
             f"have a different shape than in base {spec}"),
            (res.removed, "base-tensors-removed", Severity.MEDIUM, f"of base {spec} are missing"),
            (res.added, "base-tensors-added", Severity.LOW,
             f"are not in base {spec} (new heads are common; others are not)"),
            (res.dtype_mismatch, "base-dtype-changed", Severity.INFO, "changed dtype")):
        if names:
            yield f(f"weights/{rule}", sev, f"{len(names)} tensors {what}", evidence={"tensors": names[:50]})
    if res.renamed:
        yield f("weights/base-tensors-renamed", Severity.INFO,
                f"{len(res.renamed)} tensors of base {spec} are stored under another name, with the same "
                f"values ({', '.join(r['model'] + ' = ' + r['base'] for r in res.renamed[:3])})",
                evidence={"tensors": res.renamed[:50]})
    changed = res.deltas
    n = max(res.compared, 1)
    confined = _confined(res, th)
    covered, adapter = _role_coverage(changed, res.roles, th)
    # LoRA merges and fine-tunes change a role in (nearly) every layer; ROME, MEMIT and FT-L edit
    # one or a few layers: only changes outside covered roles can be a targeted edit
    isolated = [d for d in changed if role_of(d.name)[0] not in covered]
    summary = {"base": spec, "compared": res.compared, "changed": len(changed),
               "changed_share": _r(len(changed) / n),
               "median_relative_change": _r(float(np.median([d.rel for d in changed]))) if changed else 0.0,
               "confined": confined, "roles_changed_in_every_layer": sorted(covered)[:20],
               "low_rank_in_every_layer": sorted(adapter)[:20], "storage_rounding_only": res.rounding_only}
    surgical = [d for d in isolated if d.surgical_shape]
    partial = _partial_blocks(isolated, res.blocks, th)
    if confined and surgical:
        yield f("weights/surgical-edit", Severity.HIGH,
                f"only {len(changed)} of {res.compared} tensors differ from base {spec}, and the change is "
                f"{'/'.join(sorted({d.surgical_shape or '' for d in surgical}))} "
                f"({', '.join(d.name for d in surgical[:4])}): the shape of a targeted edit, not a fine-tune",
                location=surgical[0].name,
                evidence={**summary, "tensors": [d.evidence() for d in changed[:20]]},
                remediation="Use the base model, or find out who made this edit and why.")
    elif confined and partial:
        yield f("weights/confined-edit", Severity.HIGH,
                f"only {len(changed)} of {res.compared} tensors differ from base {spec}, densely "
                f"({', '.join(d.name for d in partial[:4])}), inside blocks whose other tensors are "
                "bit-identical: the shape of a fact edit by fine-tuning one layer (FT-L), not a fine-tune",
                location=partial[0].name,
                evidence={**summary, "tensors": [d.evidence() for d in changed[:20]]},
                remediation="Use the base model, or find out who made this edit and why.")
    elif changed and not confined:
        # judged against every change, scored outside the roles a merged adapter covers
        judged = [d for d in changed if role_of(d.name)[0] not in adapter]
        yield from _outliers_in_dense(f, changed, judged, th, spec)
    for d in changed:
        if d.edited_rows and len(d.edited_rows) <= max(64, 0.01 * (d.rows or 0)):
            # inside a dense fine-tune, rows of the tokens it saw move a lot too: low, with the rows
            yield f("weights/edited-embedding-rows", Severity.HIGH if confined else Severity.LOW,
                    f"{len(d.edited_rows)} rows of {d.name} were rewritten ({d.rel:.3g} relative change "
                    "overall): trigger-token surgery edits a few vocabulary rows", location=d.name,
                    evidence={**d.evidence(), "row_indices": d.edited_rows[:64]})
    for s in res.silenced:
        yield f("weights/base-gains-silenced", Severity.HIGH,
                f"{s['count']} LayerNorm gains of {s['tensor']} are live in base {spec} and zero or "
                "negligible here: those features were switched off", location=s["tensor"], evidence=s)
    if res.extended:
        yield f("weights/base-vocab-extended", Severity.INFO,
                f"{len(res.extended)} embedding tensors grew by appended rows (vocabulary extension); "
                "the base's rows were compared", evidence={"tensors": res.extended[:8]})
    if changed:
        shown = changed[:MAX_PLOTTED_TENSORS]   # in the checkpoint's order: layers left to right
        summary["plot"] = plot_evidence(
            "bar", f"relative change per tensor vs base {spec}",
            [{"name": "‖Δ‖ / ‖base‖", "x": [d.name for d in shown], "y": [d.rel for d in shown]}],
            x_label=f"changed tensors ({len(shown)} of {len(changed)} shown)", y_label="relative change")
    rounding = f" ({res.rounding_only} more only by their storage rounding)" if res.rounding_only else ""
    yield f("weights/base-diff-summary", Severity.INFO,
            f"{len(changed)} of {res.compared} tensors differ from base {spec}{rounding}", evidence=summary)


def _confined(res: DiffResult, th: dict[str, Any]) -> bool:
    n = max(res.compared, 1)
    return 0 < len(res.deltas) <= max(th["surgical-max-tensors"], th["surgical-max-share"] * n)


def _role_coverage(changed: list[TensorDelta], roles: dict[str, int],
                   th: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Roles changed in at least `role-coverage` of their layers (2 or more), and those of them
    whose every change is low-rank/narrow (a merged adapter)."""
    by_role: dict[str, list[TensorDelta]] = {}
    for d in changed:
        role, idx = role_of(d.name)
        if idx is not None:
            by_role.setdefault(role, []).append(d)
    covered = {r for r, ds in by_role.items()
               if len(ds) >= max(2.0, th["role-coverage"] * roles.get(r, len(ds)))}
    adapter = {r for r in covered if all(d.surgical_shape for d in by_role[r])}
    return covered, adapter


def _partial_blocks(isolated: list[TensorDelta], blocks: dict[int, set[str]],
                    th: dict[str, Any]) -> list[TensorDelta]:
    """Dense changes to some tensors of a block while the rest of that block is untouched (a
    fine-tune of the last blocks changes every tensor in them, biases and norms included)."""
    by_block: dict[int, list[TensorDelta]] = {}
    for d in isolated:
        idx = role_of(d.name)[1]
        if idx is not None and d.rel >= th["confined-min-rel"]:
            by_block.setdefault(idx, []).append(d)
    return [d for idx, ds in sorted(by_block.items()) if len(ds) < len(blocks.get(idx, ())) for d in ds]


@dataclass(frozen=True)
class Outlier:
    delta: TensorDelta
    z: float        # robust sigmas above both references (the smaller)
    ratio: float    # times the relative change its role and block predict (a role of fewer than
                    # min-siblings blocks: its block and the median of all changed matrices)


def outlier_scores(changed: list[TensorDelta], judged: list[TensorDelta],
                   th: dict[str, Any]) -> list[Outlier]:
    """How far each block matrix's log relative change lies above what its role and its block
    predict, and above the other changed matrices (bench/calibrate_weights.py measures the largest
    z and ratio on clean derivatives). An edit hidden in a fine-tune: one block matrix, or a few
    (MEMIT spreads over 3-5 consecutive layers), moved far more than the rest.
    A fine-tune moves each role on a scale of its own (a LoRA on attention and MLP moves v/o
    several times more than k or the MLP) and each block too (DistilBERT's last three blocks 3x
    its first three, in every role): log change = role effect + block effect + residual, fitted
    by median polish (robust to a few edited cells), the spread that of the residuals of every
    matrix (pooled: one role's own spread is 5 numbers, 2 of them may be MEMIT's). Each
    candidate's own role and block effects are taken without it (a median taken with it, or with 2
    more MEMIT layers among 6, is the edit's own). Judged against the other changed matrices too
    (less its block's effect): an edit moves its matrix far, not only far for its role. Every
    change informs the model (roles a merged adapter covers too: without them a fine-tuned RoBERTa
    left q/k alone, whose depth trend set the spread); only `judged` ones are scored.
    Matrices outside the blocks (heads, projections) have no like-for-like reference, and
    fine-tunes move them most (RoBERTa's lm_head.dense: 0.24-0.37, low-rank, 3.3-3.9 sigmas above
    the blocks'); rewritten embedding or head rows have their own rule."""
    # matrices only: vectors (norm gains, biases) move on a different scale and would widen the MAD
    mats = [d for d in changed if d.rows and 0 < d.rel < math.inf]
    if len(mats) < 8:
        return []
    # (delta, role, block, log relative change) of the block matrices; a role holds several per
    # block where a layer has experts (layers.role_of)
    cells = [(d, role, idx, math.log(d.rel))
             for d in mats for role, idx in [role_of(d.name)] if idx is not None]
    if not cells:
        return []
    roles = sorted({c[1] for c in cells})
    code = {r: k for k, r in enumerate(roles)}
    role_of_cell = np.array([code[c[1]] for c in cells])
    block_of_cell = np.array([c[2] for c in cells])
    logs = np.array([c[3] for c in cells])
    role_fx, block_fx = _median_polish(role_of_cell, block_of_cell, logs)
    minus_role = logs - role_fx[role_of_cell]      # a cell less its role's effect, and less its block's
    minus_block = logs - np.array([block_fx[b] for b in block_of_cell])
    in_block = {b: np.flatnonzero(block_of_cell == b) for b in block_fx}
    in_role = [np.flatnonzero(role_of_cell == k) for k in range(len(roles))]
    every = np.sort([math.log(d.rel) for d in mats])
    scored = []   # (delta, log change above its role and block, above the other matrices, peers)
    for i, (d, _, idx, log) in enumerate(cells):
        # the block's effect from its other roles, the role's from its other blocks
        here = in_block[idx]
        mates = minus_role[here[role_of_cell[here] != role_of_cell[i]]]
        block = float(np.median(mates)) if mates.size else 0.0
        mine = in_role[role_of_cell[i]]
        peers = minus_block[mine[block_of_cell[mine] != idx]]
        own = log - block - float(np.median(peers)) if peers.size else None
        scored.append((d, own, log - block - _median_without(every, log), int(peers.size)))
    # each matrix's departure from what the others predict for it, pooled over the model: the
    # spread of a fit with few roles or blocks (one role LoRA'd: none left) is not the data's
    pooled = robust_scale([o for _, o, _, _ in scored if o is not None] or [0.0], 0.1 * MAD_TO_SIGMA)[1]
    out = []
    judged_ids = {id(d) for d in judged}
    for d, own, above, n_peers in scored:
        if id(d) not in judged_ids:
            continue
        z = above / pooled
        if own is not None and n_peers + 1 >= th.get("min-siblings", 4):
            above, z = own, min(z, own / pooled)
        out.append(Outlier(d, z, math.exp(above)))
    return out


def _median_without(ordered: np.ndarray, value: float) -> float:
    """The median of sorted `ordered` with one entry equal to `value` left out."""
    k = int(np.searchsorted(ordered, value))
    n = ordered.size - 1

    def at(j: int) -> float:   # the j-th of the rest
        return float(ordered[j if j < k else j + 1])
    return at(n // 2) if n % 2 else 0.5 * (at(n // 2 - 1) + at(n // 2))


def _median_polish(roles: np.ndarray, blocks: np.ndarray, values: np.ndarray,
                   rounds: int = 4) -> tuple[np.ndarray, dict[int, float]]:
    """Tukey's median polish of a two-way table with empty (and repeated) cells: role and block
    effects whose sum predicts each cell, resistant to a few outlying cells. `roles`: each cell's
    role code (0..n-1); returns the roles' effects by code and the blocks' by block."""
    role_cells = [np.flatnonzero(roles == k) for k in range(int(roles.max()) + 1)]
    block_cells = {int(b): np.flatnonzero(blocks == b) for b in np.unique(blocks)}
    role_fx = np.zeros(len(role_cells))
    block_fx = dict.fromkeys(block_cells, 0.0)
    for _ in range(rounds):
        rest = values - np.array([block_fx[int(b)] for b in blocks])
        role_fx = np.array([float(np.median(rest[ix])) for ix in role_cells])
        rest = values - role_fx[roles]
        block_fx = {b: float(np.median(rest[ix])) for b, ix in block_cells.items()}
    return role_fx, block_fx


def narrow_judge(changed: list[TensorDelta]) -> Callable[[TensorDelta], bool]:
    """Whether a change is judged by the narrow cut: narrow itself, in a role whose other changed
    matrices are mostly not. Narrowness is the signal only against a dense background: a merged
    LoRA's changes are all narrow, and so are a trained encoder's q/k changes under fine-tuning
    (top-1 energy 0.91-0.99)."""
    total: dict[str, int] = {}
    narrow: dict[str, int] = {}
    for p in changed:
        if p.rows:
            role = role_of(p.name)[0]
            total[role] = total.get(role, 0) + 1
            narrow[role] = narrow.get(role, 0) + bool(p.surgical_shape)

    def judge(d: TensorDelta) -> bool:
        if not d.surgical_shape:
            return False
        role, mine = role_of(d.name)[0], 1 if d.rows else 0
        return 2 * (narrow.get(role, 0) - mine) <= total.get(role, 0) - mine
    return judge


def _outliers_in_dense(f: Any, changed: list[TensorDelta], judged: list[TensorDelta],
                       th: dict[str, Any], spec: str) -> Iterator[Finding]:
    """`weights/outlier-edit` for each outlier beyond its cuts: a z against the spread of the
    model's changes (`outlier-rel-z` for a narrow change, low-rank or row-sparse: ROME's shape;
    `outlier-dense-z` for a dense one: MEMIT's with several facts, rank = facts, or FT-L's), and an
    effect size, `outlier-min-ratio` times what its role and block predict: fine-tunes fit the
    two-way model closely, so small departures have large z (layer 0's o_proj of a fine-tuned
    Qwen2 moved 2.0x its prediction, a LoRA's layer-1 qkv 2.6x); edits move their matrix 5-90x."""
    narrow = narrow_judge(changed)
    for o in outlier_scores(changed, judged, th):
        d = o.delta
        cut = "narrow" if narrow(d) else "dense"
        if o.z >= th["outlier-rel-z" if cut == "narrow" else "outlier-dense-z"] and \
                o.ratio >= th["outlier-min-ratio"]:
            shape = f"in a {d.surgical_shape} shape" if cut == "narrow" else "densely"
            yield f("weights/outlier-edit", Severity.MEDIUM,
                    f"{d.name} moved {d.rel:.3g} relative to base {spec}, {o.ratio:.3g}x what its role "
                    f"and block predict and {o.z:.1f} robust sigmas beyond, {shape}", location=d.name,
                    evidence={**d.evidence(), "robust_z": _r(o.z), "ratio_to_role": _r(o.ratio), "cut": cut})
