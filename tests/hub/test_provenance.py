"""static.provenance on local targets and on hand-made Hub targets (no network)."""

from __future__ import annotations

import io
import zipfile

import pytest

from hfguard.checks import available_checks
from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.provenance import ProvenanceCheck, damerau_levenshtein, lookalikes, skeleton
from hfguard.target import Target, TargetFile, local_target
from testing.fakehub.builders import os_system_pickle, safetensors_bytes, torch_zip_bytes


def mem_file(path: str, data: bytes, **kw) -> TargetFile:
    return TargetFile(path=path, size=len(data), opener=lambda: io.BytesIO(data), **kw)


def hub_target(repo: str, files: dict[str, bytes], **meta) -> Target:
    return Target(name=repo, source="hub", repo_id=repo, revision="a" * 40,
                  files=[mem_file(p, d) for p, d in files.items()], meta=meta)


def rules_of(report) -> set[str]:
    return {f.rule for f in report.all_findings()}


def test_registered_as_a_static_check():
    [check] = [c for c in available_checks() if c.id == "static.provenance"]
    assert check.tier == "static"


@pytest.mark.parametrize(("a", "b", "d"), [("abc", "abc", 0), ("abc", "acb", 1),
                                           ("eleutherai", "eleuterai", 1), ("kitten", "sitting", 3),
                                           ("", "ab", 2), ("ca", "abc", 3)])
def test_damerau_levenshtein(a, b, d):
    assert damerau_levenshtein(a, b) == d


@pytest.mark.parametrize(("candidate", "real"), [
    ("EleuterAI/gpt-j-6B", "EleutherAI/gpt-j-6B"),            # missing letter in the org
    ("EleutherrAI/gpt-j-6B", "EleutherAI/gpt-j-6B"),          # doubled letter
    ("meta-Ilama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf"),  # capital I for l
    ("meta-llama/L1ama-2-7b-hf", None),                        # same publisher: not squatting
    ("rneta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf"),  # rn for m
    ("m\u0435ta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-hf"),  # Cyrillic e
    ("openai-c0mmunity/gpt2", "openai-community/gpt2"),        # zero for o
    ("ｍistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-v0.1"),  # full-width m
    ("EleutherAI/gpt-j-6B", None),                             # the real one
    ("someone/my-finetune", None),
    ("TheBloke/Llama-2-7B-GGUF", None),
])
def test_lookalike_names(candidate, real):
    hits = lookalikes(candidate)
    assert (hits[0][0] if hits else None) == real


def test_org_alone_imitating_a_publisher_is_medium():
    [(real, how, sev, _)] = lookalikes("EleuterAI/my-own-model")[:1]
    assert real == "eleutherai" and sev is Severity.MEDIUM


def test_skeleton_folds_unicode_and_ascii_confusables():
    assert skeleton("meta-Ilama") == skeleton("meta-llama") == skeleton("mеta-1lama")
    assert skeleton("rnodel") == skeleton("model")


def test_lookalike_finding_and_allow_list():
    target = hub_target("EleuterAI/gpt-j-6B", {"model.safetensors": safetensors_bytes(8)})
    report = scan(target, Policy(), [ProvenanceCheck()])
    assert report.verdict is Verdict.BLOCK and "provenance/lookalike-name" in rules_of(report)
    trusting = Policy(allow=("EleuterAI/*",))
    assert scan(target, trusting, [ProvenanceCheck()]).verdict is Verdict.PASS
    denied = scan(hub_target("evil-org/x", {}), Policy(deny=("evil-org/*",)), [ProvenanceCheck()])
    assert "provenance/denied-repo" in rules_of(denied)


def test_format_claims_on_local_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(os_system_pickle(f"touch {tmp_path / 'PWNED'}"))
    (tmp_path / "config.json").write_bytes(b"\x00\x01binary\xff")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("payload/run.sh", "echo hi")
    (tmp_path / "weights.bin").write_bytes(buf.getvalue())
    (tmp_path / "good.bin").write_bytes(torch_zip_bytes(b"\x80\x02}q\x00."))
    (tmp_path / "good.safetensors").write_bytes(safetensors_bytes(4))
    (tmp_path / "tokenizer.json").write_bytes(b'{"a": 1}')
    report = scan(local_target([str(tmp_path)]), Policy(), [ProvenanceCheck()])
    bad = {f.file.rsplit("/", 1)[-1]: f for f in report.all_findings()
           if f.rule == "provenance/format-mismatch"}
    assert set(bad) == {"model.safetensors", "config.json", "weights.bin"}
    assert bad["model.safetensors"].severity is Severity.HIGH
    assert "not a PyTorch checkpoint" in bad["weights.bin"].message
    assert report.verdict is Verdict.BLOCK
    assert not (tmp_path / "PWNED").exists()


def test_pickle_only_weights_custom_code_and_safetensors_twin():
    config = b'{"auto_map": {"AutoModel": "modeling_x.XModel"}}'
    only_pickle = hub_target("acme/old", {"pytorch_model.bin": torch_zip_bytes(b"\x80\x02}q\x00."),
                                          "config.json": config, "modeling_x.py": b"import os\n"},
                             library_name="transformers")
    only_pickle.card["library_name"] = "transformers"
    report = scan(only_pickle, Policy(), [ProvenanceCheck()])
    by_rule = {f.rule: f for f in report.all_findings()}
    assert by_rule["provenance/pickle-only-weights"].severity is Severity.MEDIUM
    code = by_rule["provenance/custom-code"]
    assert code.evidence["auto_map"] == {"AutoModel": "modeling_x.XModel"}
    assert code.evidence["python_files"] == ["modeling_x.py"]
    twin = hub_target("acme/new", {"pytorch_model.bin": torch_zip_bytes(b"\x80\x02}q\x00."),
                                   "model.safetensors": safetensors_bytes(4)})
    assert "provenance/pickle-only-weights" not in rules_of(scan(twin, Policy(), [ProvenanceCheck()]))


def test_unpinned_reference_only_matters_in_the_hook():
    target = hub_target("acme/m", {"model.safetensors": safetensors_bytes(4)}, requested_revision="main")
    assert "provenance/unpinned-revision" not in rules_of(scan(target, Policy(), [ProvenanceCheck()]))
    hooked = scan(target, Policy(), [ProvenanceCheck()], options={"context": "hook"})
    [f] = [f for f in hooked.all_findings() if f.rule == "provenance/unpinned-revision"]
    assert f.severity is Severity.LOW and "a" * 40 in f.remediation
    target.meta["requested_revision"] = "b" * 40
    pinned = scan(target, Policy(), [ProvenanceCheck()], options={"context": "hook"})
    assert "provenance/unpinned-revision" not in rules_of(pinned)


def test_hub_safe_status_is_not_a_pass_and_virus_is_critical():
    target = hub_target("acme/m", {"model.safetensors": b"not safetensors at all"},
                        file_security={"model.safetensors": {"status": "safe",
                                                             "av_scan": {"virusFound": False}}})
    report = scan(target, Policy(), [ProvenanceCheck()])
    assert report.verdict is not Verdict.PASS
    target = hub_target("acme/m", {"model.safetensors": safetensors_bytes(4)},
                        file_security={"model.safetensors": {"status": "unsafe", "av_scan": {
                            "virusFound": True, "virusNames": ["Pickle.Malware"]}}})
    rules = {f.rule: f.severity for f in scan(target, Policy(), [ProvenanceCheck()]).all_findings()}
    assert rules["provenance/hub-virus"] is Severity.CRITICAL
    assert rules["provenance/hub-security-status"] is Severity.HIGH
