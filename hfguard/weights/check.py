"""The weights-tier checks: `weights.anomalies` (statistics, sibling outliers, privacy-backdoor
fingerprints) and `weights.base_diff` (what changed against the declared base model, and how).

Nothing heavy is imported at module level: `hfguard checks` instantiates every check.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Severity
from hfguard.target import Target
from hfguard.weights.defaults import DIFF_DEFAULTS

# Defaults for [tool.hfguard.thresholds.weights]; how they were chosen: docs/weights-calibration.md
DEFAULTS: dict[str, Any] = {
    "robust-z": 6.9,             # sibling outlier -> medium (calibrated: docs/weights-calibration.md)
    "robust-z-high": 12.0,       # ... -> high
    "min-siblings": 4,
    "tail-k": 6.0,               # tail_share counts entries beyond tail-k sigma (evidence)
    "spectral-max-elements": 1 << 18,   # larger matrices: spectral summary on every k-th row
    "trap-min-neurons": 8,
    "trap-norm-tol": 1e-6,       # float32 rows scaled to one norm agree to ~1e-7
    "trap-bias-z": 8.0,
    "trap-cosine": 0.8,          # neurons this aligned count as near-duplicates (trained: pairs only)
    "trap-fire-z": 3.0,          # estimated firing rate this many robust sigmas below the layer's
    "rare-fire-z": 12.0,         # ... this many, trap-min-neurons or more of them: rarely-firing (calibrated)
    "silenced-gain-rel": 1e-3,   # a norm gain <= this x the tensor's typical |gain| silences it
    "silenced-gain-min": 8,      # ... and this many in one tensor are reported (MiniLM has 3 dead ones)
    "lone-bias-z": 25.0,
    "huge-constant-z": 200.0,
    "huge-constant-abs": 10.0,
    "duplicate-rows": 2,
    "single-nonzero-rows": 1,
    "max-findings-per-rule": 20,
    "workers": 0,                # threads measuring tensors; 0: one per usable core (memory permitting)
}


def thresholds(ctx: ScanContext) -> dict[str, Any]:
    return {k: ctx.threshold("weights", k, v) for k, v in DEFAULTS.items()}


class WeightsAnomalies(Check):
    id = "weights.anomalies"
    THRESHOLDS, threshold_section = DEFAULTS, "weights"
    tier = "weights"
    version = "1"
    description = "tensor statistics, sibling-layer outliers, NaN/Inf, privacy-backdoor fingerprints"

    def check_target(self, target: Target, ctx: ScanContext) -> Iterable[Finding]:
        from hfguard.weights.session import weights_session

        # remote shards are fetched one at a time as the pass reads them, and deleted after; with
        # weights.base_diff in the scan this pass diffs against the base on its way (one fetch each)
        with weights_session(ctx) as session:
            yield from self._target(target, ctx, session)

    def _target(self, target: Target, ctx: ScanContext, session: Any) -> Iterator[Finding]:
        from hfguard.weights.copies import Digests, digest_recorder, folders_with_copies, inconsistent_copies
        from hfguard.weights.progress import weight_bytes
        from hfguard.weights.stats import backend_for

        ckpts, failed = session.checkpoints(target)
        yield from unreadable_findings(self, failed, examined=bool(ckpts))
        if not ckpts:
            if not failed:
                yield self.finding("weights/no-tensors", Severity.INFO,
                                   f"no safetensors or torch zip checkpoint in {target.display}")
            return
        base = _diff_reference(target, ctx, session)
        try:   # the pass reads the base too when it diffs on its way
            be = backend_for(str(ctx.options.get("device") or "auto"),
                             weight_bytes([*ckpts, base.ref] if base is not None else ckpts))
        except (RuntimeError, ValueError) as exc:   # e.g. --device cuda on a machine without one
            yield self.finding("weights/device-unavailable", Severity.MEDIUM, str(exc), error=True)
            return
        th = thresholds(ctx)
        configs = configs_by_dir(target)

        # two copies of one model in a folder: each tensor's raw digest is kept on the way, so the
        # copies are compared without fetching their shards again (copies.compare_copies)
        digests: Digests | None = {} if folders_with_copies(ckpts) else None
        for ckpt in ckpts:
            ctx.progress(f"weights: {ckpt.name} ({len(ckpt.tensors)} tensors, {be.name})"
                         + (f", diffed against {base.label} on the way" if base is not None else ""))
            record = None if digests is None else digest_recorder(ckpt, digests)
            try:
                yield from self._checkpoint(ckpt, be, th, ctx, configs.get(ckpt.directory), session,
                                            base, record)
            except Exception as exc:
                session.aborted = exc   # weights.base_diff gives up with it too (the diffs are missing)
                raise
        if digests is not None:
            for file, hit in inconsistent_copies(ckpts, ctx.budget_seconds, ctx.progress, digests):
                yield from self.findings_from([hit], file=file, remediation=_REMEDIATION.get)

    def _checkpoint(self, ckpt: Any, be: Any, th: dict[str, Any], ctx: ScanContext,
                    config: tuple[str, dict[str, Any]] | None, session: Any, base: Any,
                    record: Callable[[Any, Any], None] | None = None) -> Iterator[Finding]:
        """`base`: the diff.DiffBase diffed on the way (or None); `record`: also fed each tensor
        the pass reads (copies.digest_recorder)."""
        from hfguard.weights.analyze import analyze_checkpoint
        from hfguard.weights.diff import TensorDiffer, diff_thresholds
        from hfguard.weights.shards import checkpoint_meter, shard_findings
        from hfguard.weights.stream import plan_reads
        from hfguard.weights.tensors import WeightsFormatError

        yield from shard_findings(self, ckpt.problems, ckpt.name)
        if unread := _packed_not_read(ckpt):
            yield self.finding(
                "weights/quantized-not-read", Severity.LOW,
                f"{len(unread)} packed or integer weight tensors are not measured or diffed "
                f"({', '.join(unread[:3])}): hfguard does not dequantize their format", file=ckpt.name,
                evidence={"tensors": unread[:50]})
        started = time.monotonic()
        ref = None if base is None else base.ref
        differ = None if ref is None else TensorDiffer(ref, ckpt, be, diff_thresholds(ctx, th))
        label = f"weights: {ckpt.name}" + ("" if base is None else f" + diff vs {base.label}")
        meter = checkpoint_meter(label, ckpt, ctx.budget_seconds, ctx.progress,
                                 None if differ is None else {n: differ.pair(n)[0] for n in differ.todo})
        plan_reads(_reads(ckpt, differ))
        try:
            hits, summary = analyze_checkpoint(ckpt, be, th, meter, config,
                                               _fed(None if differ is None else differ.feed, record))
        except WeightsFormatError as exc:   # e.g. a storage that reaches past the end of the file
            if differ is not None:
                session.diffs[ckpt.name] = exc
            yield from unreadable_findings(self, [(ckpt.name, str(exc))], examined=False)
            return
        if differ is not None:
            session.diffs[ckpt.name] = differ.outcome()
        meter.finish()
        summary["seconds"] = round(time.monotonic() - started, 3)
        cap = th["max-findings-per-rule"]
        counts: dict[str, int] = {}
        shown = []
        for hit in hits:
            counts[hit.rule] = counts.get(hit.rule, 0) + 1
            if counts[hit.rule] <= cap:
                shown.append(hit)
        yield from self.findings_from(shown, file=ckpt.name, remediation=_REMEDIATION.get)
        over = {r: n - cap for r, n in counts.items() if n > cap}
        if over:
            summary["findings_not_shown"] = over
        quantized = ""
        if ckpt.dequantized:
            summary["dequantized"] = ckpt.dequantized
            quantized = f" ({ckpt.dequantized} quantized weights measured dequantized, by their scales)"
        yield self.finding("weights/summary", Severity.INFO,
                           f"{summary['tensors']} tensors, {summary['parameters']:,} parameters read "
                           f"in {summary['seconds']}s on {be.name}{quantized}", file=ckpt.name,
                           evidence=summary)


class WeightsBaseDiff(Check):
    id = "weights.base_diff"
    THRESHOLDS, threshold_section = {**DEFAULTS, **DIFF_DEFAULTS}, "weights"
    tier = "weights"
    version = "1"
    description = "diff against the declared base model: which tensors changed, how much, in what shape"

    def check_target(self, target: Target, ctx: ScanContext) -> Iterable[Finding]:
        from hfguard.weights.diff import diff_findings
        from hfguard.weights.session import weights_session

        with weights_session(ctx) as session:
            yield from diff_findings(self, target, ctx, thresholds(ctx), session)


def _fed(*feeds: Callable[[Any, Any], None] | None) -> Callable[[Any, Any], None] | None:
    """One on_tensor feed calling each given one (None when none is given)."""
    live = [f for f in feeds if f is not None]
    if len(live) < 2:
        return live[0] if live else None

    def both(meta: Any, values: Any) -> None:
        for f in live:
            f(meta, values)
    return both


# integer tensors that hold a layer's weights in a format not read (tensors.attach_scales and
# attach_packed read float8/int8 with scales, bitsandbytes LLM.int8 and 4-bit, GPTQ, AWQ,
# compressed-tensors pack-quantized, NVFP4 and MXFP4): a bitsandbytes 4-bit uint8 `weight` whose parts do
# not validate, a `weight_packed`, `qweight` or MXFP4 `_blocks` without a config that declares its layout
_PACKED_NAMES = re.compile(r"(\.qweight|\.weight_packed|\.weight|_blocks)$")


def _packed_not_read(ckpt: Any) -> list[str]:
    return sorted(n for n, m in ckpt.tensors.items()
                  if not m.is_float and m.numel > 1 and len(m.shape) >= 1 and _PACKED_NAMES.search(n))


def _reads(ckpt: Any, differ: Any) -> list[Any]:
    """What the statistics pass reads, in order: each float tensor, and the base's tensor it is
    diffed against when it diffs on the way."""
    out = []
    for m in ckpt.float_tensors():
        out.append(m)
        if differ is not None and m.name in differ.todo:
            out.append(differ.pair(m.name)[0])
    return out


def _diff_reference(target: Target, ctx: ScanContext, session: Any) -> Any:
    """The base (diff.DiffBase) the statistics pass diffs against on its way, when the session
    says so and the base resolves to a checkpoint; else None (weights.base_diff then reads, and
    reports, for itself)."""
    if not session.diff_on_the_way:
        return None
    try:
        base = session.base(target, ctx)
    except Exception:  # noqa: BLE001 - a base that fails to resolve is weights.base_diff's finding
        return None
    return base if base.ref is not None else None


def unreadable_findings(check: Check, failed: list[tuple[str, str]], examined: bool) -> Iterator[Finding]:
    """Broken weight files are ERROR (evidence missing). A format this tier cannot read is ERROR too,
    unless another checkpoint of the target was examined (an ONNX or GGUF export next to the
    safetensors): then it is a low finding that names what was not looked at."""
    from hfguard.weights.tensors import UNSUPPORTED

    for path, why in failed:
        if examined and why.startswith(UNSUPPORTED):
            yield check.finding("weights/not-examined", Severity.LOW, f"weights tier skipped {path}: {why}",
                                file=path, remediation="Scan that file's safetensors form, if any.")
            continue
        yield check.finding("weights/unreadable", Severity.MEDIUM,
                            f"weights tier cannot read {path}: {why}", file=path, error=True,
                            remediation="Provide safetensors weights, or scan with --tier static only.")


def configs_by_dir(target: Target) -> dict[str, tuple[str, dict[str, Any]]]:
    """config.json of each folder of the target, parsed (small files only)."""
    from hfguard.weights.traps import read_config

    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for f in target.files:
        if f.name == "config.json" and f.size <= 4 << 20:
            doc = read_config(f.materialize())
            if doc is not None:
                out[f.path.rsplit("/", 1)[0] if "/" in f.path else "."] = (f.path, doc)
    return out


_REMEDIATION = {
    "weights/inconsistent-copies": "Keep one weights file (safetensors), or find out why the copies differ "
                                   "before loading either.",
    "weights/nan-inf": "Do not load: NaN/Inf weights are corrupt or a deliberate denial of service.",
    "weights/trap-neurons": "Do not fine-tune this model on private data; obtain weights from the original "
                            "publisher and compare (--base).",
    "weights/layer-outlier": "Compare against the original model with --base; a rescaled block is a "
                             "tampering sign.",
}
