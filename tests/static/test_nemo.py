"""NeMo .nemo archives (issue 12): Hydra `_target_` callables in model_config.yaml, run by
hydra.utils.instantiate at restore, and the checkpoint pickles beside them. Archives are laid out
as NeMo's save_to writes them (a tar of ./model_config.yaml and ./model_weights.ckpt, a torch zip)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.nemo import NemoCheck
from hfguard.static.pickle.check import SerializationCheck
from hfguard.target import local_target

CONFIG = {
    "sample_rate": 16000,
    "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                     "sample_rate": 16000, "features": 80},
    "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "n_layers": 2},
    "optim": {"name": "adamw", "lr": 0.001,
              "sched": {"name": "CosineAnnealing", "warmup_steps": 100}},
    "target": "nemo.collections.asr.models.ctc_bpe_models.EncDecCTCModelBPE",
    "nemo_version": "2.0.0",
}


class _Payload:
    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __reduce__(self):
        return os.system, (f"touch {self.mark}",)


def _nemo(path: Path, config: dict | str, weights: object = None, gz: bool = False,
          extra: tuple[tuple[str, bytes], ...] = ()) -> Path:
    text = config if isinstance(config, str) else yaml.safe_dump(config)
    buf = io.BytesIO()
    torch.save(weights if weights is not None else {"encoder.w": torch.zeros(2, 2)}, buf)
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        members = (("./model_config.yaml", text.encode()), ("./model_weights.ckpt", buf.getvalue()), *extra)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _scan(path: Path, checks=None):
    report = scan(local_target([str(path)]), Policy(), checks or [NemoCheck()])
    return report, [f for f in report.all_findings()]


@pytest.mark.parametrize("gz", [False, True])
def test_benign_nemo_passes_both_checks(tmp_path, gz):
    report, found = _scan(_nemo(tmp_path / "asr.nemo", CONFIG, gz=gz), [NemoCheck(), SerializationCheck()])
    assert report.verdict is Verdict.PASS, [(f.rule, f.message) for f in found]


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.Popen", "torch.load",
                                    "nemo.utils.subprocess.run", "nemo.core.classes.common.os.execv"])
def test_hydra_target_callable_blocks(tmp_path, target):
    cfg = {**CONFIG, "preprocessor": {"_target_": target, "_args_": ["touch /tmp/PWNED"]}}
    report, found = _scan(_nemo(tmp_path / "evil.nemo", cfg))
    [f] = found
    assert (f.rule, f.severity) == ("nemo/hydra-target", Severity.CRITICAL)
    assert f.evidence["target"] == target and f.location.endswith("preprocessor._target_")
    assert report.verdict is Verdict.BLOCK


def test_nested_and_aliased_targets_are_found(tmp_path):
    text = ("base: &evil {_target_: subprocess.check_output, args: [id]}\n"
            "model:\n  encoder:\n    layers:\n      - *evil\n      - {_target_: nemo.core.Foo}\n")
    report, found = _scan(_nemo(tmp_path / "evil.nemo", text, gz=True))
    assert {f.evidence["target"] for f in found} == {"subprocess.check_output"}
    assert report.verdict is Verdict.BLOCK


def test_unknown_third_party_target_flags(tmp_path):
    cfg = {**CONFIG, "encoder": {"_target_": "somepkg.layers.Encoder"}}
    report, found = _scan(_nemo(tmp_path / "m.nemo", cfg))
    assert [(f.rule, f.severity) for f in found] == [("nemo/hydra-target", Severity.MEDIUM)]
    assert report.verdict is Verdict.FLAG


@pytest.mark.parametrize("gz", [False, True])
def test_pickle_inside_the_archive_is_judged_by_the_serialization_check(tmp_path, gz):
    mark = tmp_path / "PWNED"
    path = _nemo(tmp_path / "evil.nemo", CONFIG, weights={"state_dict": _Payload(str(mark))}, gz=gz)
    report, found = _scan(path, [NemoCheck(), SerializationCheck()])
    assert "pickle/dangerous-global" in {f.rule for f in found}
    assert report.verdict is Verdict.BLOCK and not mark.exists()


def test_standalone_config_and_broken_archives(tmp_path):
    cfg = tmp_path / "model_config.yaml"
    cfg.write_text(yaml.safe_dump({"m": {"_target_": "os.system"}}))
    assert _scan(cfg)[0].verdict is Verdict.BLOCK
    bad = tmp_path / "python.nemo"
    (tmp_path / "python.nemo").write_text("!!python/object/apply:os.system ['id']\n")
    assert {f.rule for f in _scan(bad)[1]} == {"nemo/bad-archive"}
    tagged = _nemo(tmp_path / "tag.nemo", "m: !!python/object/apply:os.system ['id']\n")
    assert {f.rule for f in _scan(tagged)[1]} == {"nemo/bad-config"}
    deep = _nemo(tmp_path / "deep.nemo", "a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert {f.rule for f in _scan(deep)[1]} == {"nemo/bad-config"}


def test_duplicate_checkpoint_member_is_a_reader_differential(tmp_path):
    """Two model_weights.ckpt members: NeMo's extraction keeps the last, a first-match reader the first."""
    second = io.BytesIO()
    torch.save({"encoder.w": torch.ones(2, 2)}, second)
    path = _nemo(tmp_path / "dup.nemo", CONFIG, extra=(("model_weights.ckpt", second.getvalue()),))
    report, found = _scan(path)
    assert [f.rule for f in found] == ["nemo/duplicate-member"] and report.verdict is Verdict.BLOCK


def test_nemo2_context_model_yaml(tmp_path):
    ctx = tmp_path / "llama_nemo2" / "context"
    ctx.mkdir(parents=True)
    (ctx / "model.yaml").write_text(yaml.safe_dump(
        {"_target_": "nemo.collections.llm.gpt.model.llama.LlamaModel",
         "config": {"_target_": "builtins.exec", "_args_": ["import os"]}}))
    report, found = _scan(tmp_path / "llama_nemo2")
    assert [(f.rule, f.evidence["target"]) for f in found] == [("nemo/hydra-target", "builtins.exec")]
    assert report.verdict is Verdict.BLOCK
