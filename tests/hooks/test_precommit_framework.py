"""The real pre-commit framework runs hfguard's hooks (`pre-commit try-repo` on this checkout).

Slow: pre-commit clones hfguard at HEAD (commit before running it) and builds a virtualenv with
pip, once for the four runs here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hfguard
from tests.hooks.conftest import torch_zip
from tests.static.fixtures import evil_pickle

SRC_ROOT = Path(hfguard.__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not (SRC_ROOT / ".git").exists(), reason="pre-commit clones hfguard's git checkout")
def test_pre_commit_try_repo_blocks_passes_and_uses_the_lock_offline(fake_hub, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**fake_hub.env, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PATH": BIN + os.pathsep + os.environ["PATH"], "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    head = _run(["git", "rev-parse", "HEAD"], SRC_ROOT, env).stdout.strip()
    for cmd in (["init", "-q", "-b", "main"], ["config", "commit.gpgsign", "false"]):
        _run(["git", *cmd], repo, env)

    def try_repo(*extra_env: tuple[str, str]) -> subprocess.CompletedProcess:
        _run(["git", "add", "-A"], repo, env)
        # --ref: the committed HEAD, so that all runs share one hook environment (a dirty checkout
        # would make pre-commit build a fresh one from a shadow commit every time)
        return _run([sys.executable, "-m", "pre_commit", "try-repo", str(SRC_ROOT), "--ref", head],
                    repo, {**env, **dict(extra_env)})

    # a malicious reference and a malicious model file: both hooks fail
    (repo / "train.py").write_text('from transformers import AutoModel\n'
                                   'm = AutoModel.from_pretrained("acme/evil")\n')
    (repo / "weights.pt").write_bytes(torch_zip(evil_pickle(fake_hub.mark)))
    res = try_repo()
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "pickle/dangerous-global" in out and "train.py" in out and "weights.pt" in out

    # benign: a pinned, clean model
    (repo / "weights.pt").unlink()
    good = fake_hub.shas["acme/good"]
    (repo / "train.py").write_text(textwrap.dedent(f'''
        from transformers import AutoModel
        m = AutoModel.from_pretrained("acme/good", revision="{good}")
    '''))
    res = try_repo()
    assert res.returncode == 0, res.stdout + res.stderr

    # locked, then no Hub at all: the hook answers from hfguard.lock
    assert _run([f"{BIN}/hfguard", "lock", "-q"], repo, env).returncode == 0
    fake_hub.fail(".", status=503, times=-1)
    n = len(fake_hub.log)
    res = try_repo(("HF_HUB_OFFLINE", "1"))
    assert res.returncode == 0, res.stdout + res.stderr
    # ... and a new, unlocked reference offline is an error, never a pass
    (repo / "more.py").write_text('import transformers\ntransformers.AutoModel.from_pretrained("acme/new")\n')
    res = try_repo(("HF_HUB_OFFLINE", "1"))
    assert res.returncode == 1 and "hook/not-locked" in res.stdout, res.stdout + res.stderr
    assert len(fake_hub.log) == n
