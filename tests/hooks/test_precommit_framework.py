"""The real pre-commit framework runs hfguard's hooks on real `git commit`s.

The temporary repository's .pre-commit-config.yaml names this checkout at its HEAD commit, as a
user's names hfguard's repository at a tag: pre-commit clones it, builds a virtualenv with pip
(the slow part, once here: `pre-commit try-repo` would rebuild it on every run) and installs its
git hook. Commit your work before running this test: it sees HEAD, not the working tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hfguard
from testing.pickles import evil_pickle
from tests.hooks.conftest import torch_zip

SRC_ROOT = Path(hfguard.__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not (SRC_ROOT / ".git").exists(), reason="pre-commit clones hfguard's git checkout")
def test_pre_commit_blocks_a_malicious_commit_passes_a_clean_one_and_uses_the_lock_offline(
        fake_hub, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**fake_hub.env, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PATH": BIN + os.pathsep + os.environ["PATH"], "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    head = _run(["git", "rev-parse", "HEAD"], SRC_ROOT, env).stdout.strip()
    (repo / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {SRC_ROOT}\n    rev: {head}\n    hooks:\n"
        "      - id: hfguard-refs\n      - id: hfguard-files\n")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "config", "commit.gpgsign", "false"],
                [sys.executable, "-m", "pre_commit", "install"],
                [sys.executable, "-m", "pre_commit", "install-hooks"]):
        res = _run(cmd, repo, env)
        assert res.returncode == 0, res.stdout + res.stderr

    def commit(message: str, **extra_env: str) -> subprocess.CompletedProcess:
        _run(["git", "add", "-A"], repo, env)
        return _run(["git", "commit", "-qm", message], repo, {**env, **extra_env})

    # a malicious reference and a malicious model file: both hooks fail, nothing is committed
    (repo / "train.py").write_text('from transformers import AutoModel\n'
                                   'm = AutoModel.from_pretrained("acme/evil")\n')
    (repo / "weights.pt").write_bytes(torch_zip(evil_pickle(fake_hub.mark)))
    (repo / "checkpoint.dat").write_bytes(evil_pickle(fake_hub.mark))   # no model extension
    res = commit("malicious")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "pickle/dangerous-global" in out and "train.py" in out and "weights.pt" in out
    assert "checkpoint.dat" in out
    assert _run(["git", "rev-parse", "--verify", "HEAD"], repo, env).returncode != 0  # no commit

    # benign: a pinned, clean model
    (repo / "weights.pt").unlink()
    (repo / "checkpoint.dat").unlink()
    good = fake_hub.shas["acme/good"]
    (repo / "train.py").write_text(f'from transformers import AutoModel\n'
                                   f'm = AutoModel.from_pretrained("acme/good@{good}")\n')
    res = commit("clean")
    assert res.returncode == 0, res.stdout + res.stderr

    # locked, then no Hub at all: the hook answers from hfguard.lock
    (repo / "infer.py").write_text('import transformers\ntransformers.pipeline(model="acme/good")\n')
    assert _run([f"{BIN}/hfguard", "lock", "-q"], repo, env).returncode == 0
    fake_hub.fail(".", status=503, times=-1)
    n = len(fake_hub.log)
    res = commit("locked", HF_HUB_OFFLINE="1")
    assert res.returncode == 0, res.stdout + res.stderr
    # ... and a new, unlocked reference offline is an error, never a pass
    (repo / "more.py").write_text('import transformers\ntransformers.AutoModel.from_pretrained("acme/new")\n')
    res = commit("unlocked", HF_HUB_OFFLINE="1")
    assert res.returncode != 0 and "hook/not-locked" in res.stdout + res.stderr, res.stdout + res.stderr
    assert len(fake_hub.log) == n
