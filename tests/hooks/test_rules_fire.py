"""Hook rules no other test names, fired through the real CLI (offline: nothing reaches a Hub)."""

from __future__ import annotations

import json
import subprocess

from click.testing import CliRunner

from hfguard.cli import main


def _rules(stdout: str) -> dict[str, dict]:
    return {f["rule"]: f for f in json.loads(stdout)["findings"]}


def test_inline_suppression_and_unparsable_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "train.py").write_text(
        "from transformers import AutoModel\n"
        'm = AutoModel.from_pretrained("acme/private-model")  # hfguard: ignore\n')
    (tmp_path / "broken.py").write_text('from transformers import AutoModel\ndef f(:\n    pass\n')
    res = CliRunner().invoke(main, ["hook", "refs", "train.py", "broken.py", "-q", "--format", "json"])
    found = _rules(res.stdout)
    assert found["hook/suppressed-reference"]["severity"] == "info"
    assert found["hook/unparsable-source"]["file"] == "broken.py"
    assert res.exit_code == 0  # neither blocks; the suppressed model was not vetted, so not-locked is absent
    assert "hook/not-locked" not in found


def test_staged_model_whose_blob_is_missing_is_an_error(tmp_path, monkeypatch):
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    # an index entry whose object is not in the store (a broken or partial clone)
    git("update-index", "--add", "--info-only", "--cacheinfo", f"100644,{'1' * 40},pytorch_model.bin")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["hook", "staged", "-q", "--format", "json"])
    assert res.exit_code == 2, res.output
    found = _rules(res.stdout)
    assert found["hook/unreadable-staged-file"]["error"] is True
