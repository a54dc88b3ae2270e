"""The hooks and the runtime guard against the real pieces: the fake Hub server, the real
huggingface_hub client, hfguard.hub's check_repo, the pickle and provenance checks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import hfguard
from hfguard.cli import main
from hfguard.policy import Policy
from tests.hooks.conftest import LOOKALIKE


def _project(tmp_path, monkeypatch, extra: str = ""):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "train.py").write_text(textwrap.dedent(f'''
        from transformers import AutoModel
        evil = AutoModel.from_pretrained("acme/evil")
        good = AutoModel.from_pretrained("acme/good")
        typo = AutoModel.from_pretrained("{LOOKALIKE}")
    ''').lstrip() + extra)
    monkeypatch.chdir(proj)
    return proj


def _findings(stdout: str) -> set[tuple[str, str | None]]:
    return {(f["rule"], f["location"]) for f in json.loads(stdout)["findings"]}


def test_hook_blocks_malicious_and_lookalike_references_and_the_lock_needs_no_network(
        fake_hub, tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch)
    runner = CliRunner()
    res = runner.invoke(main, ["hook", "refs", "train.py", "-q", "--format", "json"])
    assert res.exit_code == 1, res.output
    found = _findings(res.stdout)
    assert ("pickle/dangerous-global", "line 2") in found          # the payload, at its source line
    assert ("provenance/lookalike-name", "line 4") in found        # the typo-squatted name
    assert not {f for f in found if f[1] == "line 3" and not f[0].startswith("hook/")}  # good: clean
    doc = json.loads(res.stdout)
    evil = next(f for f in doc["findings"] if f["rule"] == "pickle/dangerous-global")
    assert evil["file"] == "train.py" and "acme/evil@" in evil["message"]
    assert evil["evidence"]["revision"] == fake_hub.shas["acme/evil"]

    # a benign, pinned reference passes
    (tmp_path / "proj" / "ok.py").write_text(
        f'from transformers import AutoModel\nm = AutoModel.from_pretrained("acme/good", '
        f'revision="{fake_hub.shas["acme/good"]}")\n')
    res = runner.invoke(main, ["hook", "refs", "ok.py", "-q"])
    assert res.exit_code == 0 and "PASS" in res.stdout, res.output

    res = runner.invoke(main, ["lock", "-q"])
    lock_text = (tmp_path / "proj" / "hfguard.lock").read_text()
    assert f'revision = "{fake_hub.shas["acme/evil"]}"' in lock_text and 'verdict = "BLOCK"' in lock_text
    assert runner.invoke(main, ["lock", "-q"]).exit_code == res.exit_code
    assert (tmp_path / "proj" / "hfguard.lock").read_text() == lock_text  # nothing re-vetted, same bytes
    n = len(fake_hub.requests("/api/models/"))
    assert runner.invoke(main, ["lock", "--refresh", "-q"]).exit_code == res.exit_code
    assert len(fake_hub.requests("/api/models/")) > n  # --refresh asked the Hub again
    assert (tmp_path / "proj" / "hfguard.lock").read_text() == lock_text

    # from now on the Hub is unreachable and offline mode is on: the lock answers
    requests_before = len(fake_hub.log)
    fake_hub.fail(".", status=503, times=-1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert runner.invoke(main, ["lock", "--check", "-q"]).exit_code == 0
    res = runner.invoke(main, ["hook", "refs", "train.py", "ok.py", "-q", "--format", "json"])
    assert res.exit_code == 1
    assert found <= _findings(res.stdout)
    assert len(fake_hub.log) == requests_before


def test_runtime_guard_blocks_a_malicious_download_before_it_is_loaded(fake_hub, tmp_path):
    import huggingface_hub

    with hfguard.guard(policy=Policy()):
        with pytest.raises(hfguard.ModelBlocked) as info:
            huggingface_hub.hf_hub_download("acme/evil", "pytorch_model.bin")
        assert any(f.rule == "pickle/dangerous-global" for f in info.value.findings)
        with pytest.raises(hfguard.ModelBlocked):
            huggingface_hub.snapshot_download("acme/evil")
        path = huggingface_hub.hf_hub_download("acme/good", "model.safetensors")
        assert fake_hub.shas["acme/good"] in path  # fetched at the vetted commit
        # main moves to a malicious commit after vetting: this process still gets what was vetted
        vetted = Path(path).read_bytes()
        from testing.fakehub.builders import torch_zip_bytes
        from testing.pickles import evil_pickle

        fake_hub.add_repo("acme/good", {"model.safetensors": torch_zip_bytes(evil_pickle(fake_hub.mark))})
        again = huggingface_hub.hf_hub_download("acme/good", "model.safetensors", force_download=True)
        assert Path(again).read_bytes() == vetted
        from transformers import AutoConfig

        with pytest.raises(hfguard.ModelBlocked):
            AutoConfig.from_pretrained("acme/evil")
        assert AutoConfig.from_pretrained("acme/good").model_type == "bert"
    # the malicious file itself was never downloaded whole: only ranges were read to vet it
    full = [r for r in fake_hub.requests(r"GET .*acme/evil/resolve/.*pytorch_model\.bin") if not r["range"]]
    assert full == []


def test_guard_from_the_environment_via_sitecustomize(fake_hub, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import hfguard.runtime.guard as g\ng.enable_from_env()\n")
    code = ("import huggingface_hub, hfguard\n"
            "try:\n    huggingface_hub.hf_hub_download('acme/evil', 'pytorch_model.bin')\n"
            "except hfguard.ModelBlocked as exc:\n    print('BLOCKED', exc.report.verdict)\n"
            "print(huggingface_hub.hf_hub_download('acme/good', 'config.json'))\n"
            "import transformers.utils.hub as th  # imported after the guard: patched on import\n"
            "print('PATCHED', '__hfguard_original__' in th.cached_files.__dict__)\n")
    env = {**fake_hub.env, "PYTHONPATH": str(site), "HFGUARD_GUARD": "1"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "BLOCKED BLOCK" in res.stdout and fake_hub.shas["acme/good"] in res.stdout
    assert "PATCHED True" in res.stdout
    res = subprocess.run([sys.executable, "-c", code], env={**env, "HFGUARD_GUARD": "0"},
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert "BLOCKED" not in res.stdout and "PATCHED False" in res.stdout  # switch off: nothing wrapped


def test_guard_errors_fail_closed_and_cached_files_are_scanned_offline(fake_hub):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    with hfguard.guard(policy=Policy()):
        with pytest.raises(hfguard.ModelBlocked) as info:  # cannot be vetted: ERROR, refused
            huggingface_hub.hf_hub_download("acme/missing", "config.json")
        assert info.value.report.verdict.value == "ERROR"
    with hfguard.guard(policy=Policy(), on_error="warn", forget=True), \
            pytest.warns(UserWarning, match="could not be vetted"), pytest.raises(RepositoryNotFoundError):
        huggingface_hub.hf_hub_download("acme/missing", "config.json")
    # a malicious file already in the cache (downloaded without the guard) and served offline
    cached = huggingface_hub.hf_hub_download("acme/evil", "pytorch_model.bin")
    with hfguard.guard(policy=Policy(), forget=True):
        with pytest.raises(hfguard.ModelBlocked) as info:
            huggingface_hub.hf_hub_download("acme/evil", "pytorch_model.bin", local_files_only=True)
        assert any(f.rule == "pickle/dangerous-global" for f in info.value.findings)
        assert info.value.report.target == cached
