"""Behavior-tier checks: `behavior.homoglyph` (text-encoder triggers) and
`behavior.privacy_backdoor` (loss anomaly + canary membership test for causal LMs and CLIP).

Both are target-level checks. They run only when the `behavior` tier is requested, load weights
from safetensors (or torch zip with weights_only) and refuse pickles, skip with an info finding on
model types they do not probe, and ERROR when torch/transformers are missing.

Options (from the CLI, in ``ctx.options``): ``reference`` (folder or Hub repo id), ``probe_data``
(a text file, one example per line), ``device`` (auto | cpu | cuda...). Thresholds come from
``[tool.hfguard.thresholds.behavior]`` (see each check's `THRESHOLDS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from hfguard.checks import Check, ScanContext
from hfguard.findings import Finding, Severity
from hfguard.target import Target

TEXT_ENCODERS = ("clip-text", "clip", "encoder", "open_clip")
CAUSAL_LMS = ("causal-lm",)


def _rounded(d: dict[str, Any], nd: int = 4) -> dict[str, Any]:
    return {k: round(v, nd) if isinstance(v, float) else v for k, v in d.items()}


class BehaviorCheck(Check):
    tier = "behavior"
    kinds: tuple[str, ...] = ()
    THRESHOLDS: dict[str, Any] = {}
    threshold_section = "behavior"   # both behavior checks read [tool.hfguard.thresholds.behavior]

    def th(self, ctx: ScanContext, name: str) -> Any:
        return ctx.threshold("behavior", name, self.THRESHOLDS[name])

    def check_target(self, target: Target, ctx: ScanContext) -> Iterable[Finding]:
        from hfguard.behavior.load import BehaviorUnavailable, RefusedWeights, model_dirs, require_deps

        try:
            require_deps()
        except BehaviorUnavailable as exc:
            yield self.finding(
                "behavior/unavailable",
                Severity.HIGH,
                f"the behavior tier was requested but cannot run: {exc}",
                error=True,
                remediation="pip install 'hfguard[behavior]'",
            )
            return
        with model_dirs(target) as mds:
            if not mds:
                yield self.finding(
                    "behavior/no-model",
                    Severity.INFO,
                    "no model folder (config.json / open_clip_config.json) to run; probe skipped",
                )
                return
            for md in mds:
                if md.kind not in self.kinds:
                    yield self.finding(
                        "behavior/not-applicable",
                        Severity.INFO,
                        f"{md.name}: model type {md.kind!r} "
                        f"({md.config.get('model_type', '?')}) is not one {self.id} probes",
                        location=md.name,
                    )
                    continue
                try:
                    yield from self.probe(md, ctx)
                except RefusedWeights as exc:
                    yield self.finding(
                        "behavior/refused-weights",
                        Severity.HIGH,
                        f"{md.name}: {exc}",
                        location=md.name,
                        error=True,
                        remediation="ask for safetensors weights; pickles are never loaded",
                    )
                except BehaviorUnavailable as exc:
                    yield self.finding(
                        "behavior/unavailable",
                        Severity.HIGH,
                        f"{md.name}: {exc}",
                        location=md.name,
                        error=True,
                    )

    def probe(self, md: Any, ctx: ScanContext) -> Iterator[Finding]:
        raise NotImplementedError

    def reference(self, ctx: ScanContext, loader: Callable[[Any, str], Any], device: str) -> Any:
        """--reference: a local folder or a Hub id, pinned and read like any target (hfguard.target)."""
        from hfguard.behavior.load import BehaviorUnavailable, model_dirs
        from hfguard.hub.resolve import ModelSpecError, resolve_model

        spec = ctx.options.get("reference")
        if not spec:
            return None
        ctx.progress(f"{self.id}: loading reference {spec}")
        try:
            target = resolve_model(str(spec))
        except ModelSpecError as exc:
            raise BehaviorUnavailable(f"--reference: {exc}") from None
        with model_dirs(target) as mds:
            if not mds:
                raise BehaviorUnavailable(f"--reference {spec}: no model folder (config.json or "
                                          "open_clip_config.json) in it")
            return loader(mds[0], device)


class HomoglyphCheck(BehaviorCheck):
    id = "behavior.homoglyph"
    version = "1"
    description = "Single-character (homoglyph / invisible) backdoor triggers in text encoders"
    kinds = TEXT_ENCODERS
    THRESHOLDS = {"homoglyph-z": 6.0, "homoglyph-min-collapse": 0.3, "homoglyph-min-consistency": 0.3}

    def probe(self, md: Any, ctx: ScanContext) -> Iterator[Finding]:
        from hfguard.behavior import homoglyph
        from hfguard.behavior.load import load_text_encoder, pick_device

        device = pick_device(ctx.options.get("device", "auto"))
        budget = ctx.budget()
        ctx.progress(f"{self.id}: loading {md.name} ({md.kind}) on {device}")
        enc = load_text_encoder(md, device)
        ref = self.reference(ctx, load_text_encoder, device)
        res = homoglyph.probe(
            enc,
            ref,
            z_threshold=float(self.th(ctx, "homoglyph-z")),
            min_collapse=float(self.th(ctx, "homoglyph-min-collapse")),
            min_consistency=float(self.th(ctx, "homoglyph-min-consistency")),
            tick=budget.tick,
        )
        summary = {**res.summary, "unseen_characters": [c.label for c in res.unseen]}
        if ref is not None:
            summary["reference"] = ctx.options.get("reference")
        for g, z in res.flagged:
            near = homoglyph.nearest_captions(enc, g)
            c = g.members[0]
            what = f"imitates {c.latin!r}" if c.latin else "invisible"
            yield self.finding(
                "backdoor/homoglyph-trigger",
                Severity.HIGH,
                f"{md.name}: prompts holding {c.label} ({what}) behave unlike every other candidate "
                f"character: collapse {g.scores['collapse']:.2f}, direction consistency "
                f"{g.scores['consistency']:.2f} (robust z {z['z_collapse']:.1f} / {z['z_consistency']:.1f} "
                f"across {len(res.groups)} distinct characters); the triggered embeddings lie nearest to "
                f"{near[0]['caption']!r} (cos {near[0]['cosine']:.2f}) "
                f"among {len(homoglyph.CAPTIONS)} probe captions",
                location=f"{md.name}: U+{ord(c.char):04X}",
                evidence={**homoglyph.group_evidence(g), "nearest_captions": near, "probe": summary},
                remediation="do not use this text encoder; a planted trigger (Rickrolling-style) is likely. "
                "Compare with the upstream checkpoint (--reference) and diff the weights.",
            )
        if len(res.groups) < homoglyph.MIN_GROUPS:   # no population to find an outlier in
            yield self.finding(
                "behavior/homoglyph-inconclusive",
                Severity.MEDIUM,
                f"{md.name}: the tokenizer tells only {len(res.groups)} of {res.summary['candidates']} "
                f"candidate characters apart (needs {homoglyph.MIN_GROUPS}); the trigger probe could not run",
                location=md.name,
                error=True,
                evidence={"probe": summary},
            )
        elif not res.flagged:
            top = sorted(
                res.groups,
                key=lambda g: -max(g.scores.get("z_collapse", 0), g.scores.get("z_consistency", 0)),
            )
            yield self.finding(
                "behavior/homoglyph-probe",
                Severity.INFO,
                f"{md.name}: no single-character trigger among {len(res.groups)} distinct candidate "
                f"characters "
                f"({len(res.unseen)} unseen by the tokenizer); this does not rule out multi-character or "
                f"out-of-list triggers",
                location=md.name,
                evidence={"probe": summary, "top_candidates": [homoglyph.group_evidence(g) for g in top[:3]]},
            )


class PrivacyBackdoorCheck(BehaviorCheck):
    id = "behavior.privacy_backdoor"
    version = "1"
    description = "Privacy backdoors (Wen et al. 2024): loss anomaly and a simulated canary membership test"
    kinds = (*CAUSAL_LMS, "clip", "open_clip")  # CLIP: image-caption canaries, contrastive fine-tune
    THRESHOLDS = {
        "canaries": 128,
        "min-probe-texts": 32,  # fewer (from --probe-data): AUC and its CI mean nothing; ERROR
        "finetune-epochs": 4,
        "finetune-lr": 3e-3,
        "finetune-batch": 8,
        "clip-finetune-lr": 1e-3,
        "clip-finetune-epochs": 6,
        "exposure-secrets": 8,  # digit secrets per group whose exposure is measured
        "exposure-alternatives": 63,  # random same-format secrets each is ranked among (max 6 bits)
        "seed": 0,
        # with a reference: flag when the candidate's membership AUC exceeds the reference's
        "amplification-auc": 0.1,
        "amplification-p": 0.01,
        # without one: absolute figures only
        "absolute-auc": 0.97,
        "absolute-tpr-at-1pct": 0.5,
        "loss-ratio": 1.5,
        "loss-p": 0.01,
    }

    def probe(self, md: Any, ctx: ScanContext) -> Iterator[Finding]:
        from hfguard.behavior import membership

        yield from membership.run(self, md, ctx)
