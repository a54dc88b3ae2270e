"""diffusers model_index.json (issue 12): components and pipelines that need code from outside diffusers."""

from __future__ import annotations

import json

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.diffusers import DiffusersCheck
from hfguard.target import local_target

# the model_index.json of runwayml/stable-diffusion-v1-5, as diffusers 0.2x writes it
SD15 = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.6.0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"], "image_encoder": [None, None], "requires_safety_checker": True,
}


def _repo(tmp_path, index: dict, files: dict[str, str] | None = None):
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    for name, text in (files or {}).items():
        (tmp_path / name).write_text(text)
    report = scan(local_target([str(tmp_path)]), Policy(), [DiffusersCheck()])
    return report, report.all_findings()


def test_stock_pipeline_passes(tmp_path):
    report, found = _repo(tmp_path, SD15)
    assert report.verdict is Verdict.PASS, [f.message for f in found]


def test_component_shipped_as_repository_code(tmp_path):
    index = {**SD15, "unet": ["my_unet", "MyUNet"]}
    report, found = _repo(tmp_path, index, {"my_unet.py": "class MyUNet: pass\n"})
    [f] = found
    assert (f.rule, f.severity, f.location) == ("diffusers/custom-component", Severity.MEDIUM, "unet")
    assert f.evidence["in_repo"] is True and report.verdict is Verdict.FLAG


def test_custom_pipeline_and_odd_libraries(tmp_path):
    index = {**SD15, "_class_name": ["pipeline_evil", "EvilPipeline"], "vae": ["os", "system"],
             "scheduler": ["Some.Package", "Sched"]}
    report, found = _repo(tmp_path, index)
    got = {(f.rule, f.location, f.severity) for f in found}
    assert got == {("diffusers/custom-pipeline", "_class_name", Severity.MEDIUM),
                   ("diffusers/custom-component", "vae", Severity.HIGH),
                   ("diffusers/custom-component", "scheduler", Severity.MEDIUM)}
    assert report.verdict is Verdict.BLOCK


def test_broken_index(tmp_path):
    (tmp_path / "model_index.json").write_text("[" * 100_000)
    report = scan(local_target([str(tmp_path)]), Policy(), [DiffusersCheck()])
    assert {f.rule for f in report.all_findings()} == {"diffusers/bad-index"}
