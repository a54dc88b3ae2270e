"""`hfguard install-hooks` and the plain git pre-commit hook, with real `git commit`s."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hfguard.cli import main
from hfguard.hooks.githooks import MARKER, SCRIPT, hooks_dir

BIN = str(Path(sys.executable).parent)  # where this environment's `hfguard` script lives


def git(repo: Path, *args: str, check: bool = True, env: dict | None = None):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=check,
                          env=env, timeout=120)


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    git(r, "config", "user.email", "t@example.com")
    git(r, "config", "user.name", "t")
    git(r, "config", "commit.gpgsign", "false")
    return r


def _install(repo, monkeypatch, *args):
    monkeypatch.chdir(repo)
    return CliRunner().invoke(main, ["install-hooks", *args])


def test_install_respects_core_hookspath_and_foreign_hooks(repo, monkeypatch):
    res = _install(repo, monkeypatch)
    assert res.exit_code == 0, res.output
    default = repo / ".git" / "hooks" / "pre-commit"
    assert default.read_text() == SCRIPT.read_text() and os.access(default, os.X_OK)
    assert _install(repo, monkeypatch).exit_code == 0  # its own hook: updated in place

    git(repo, "config", "core.hooksPath", "githooks")
    assert hooks_dir(repo) == repo / "githooks"
    foreign = repo / "githooks" / "pre-commit"
    foreign.parent.mkdir()
    foreign.write_text("#!/bin/sh\necho team hook\n")
    res = _install(repo, monkeypatch)
    assert res.exit_code == 2 and "not written by hfguard" in res.output
    assert foreign.read_text() == "#!/bin/sh\necho team hook\n"
    res = _install(repo, monkeypatch, "--force")
    assert res.exit_code == 0 and MARKER in foreign.read_text()
    assert (repo / "githooks" / "pre-commit.hfguard-backup").read_text().endswith("team hook\n")
    assert _install(repo, monkeypatch, "--uninstall").exit_code == 0
    assert foreign.read_text().endswith("team hook\n")  # the backup is put back


def test_plain_git_hook_vets_what_is_staged(repo, monkeypatch):
    from testing.pickles import evil_pickle

    assert _install(repo, monkeypatch).exit_code == 0
    (repo / "hfguard.toml").write_text('deny = ["evil-org"]\n')
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    (repo / "notes.txt").write_text("no models here\n")
    git(repo, "add", "hfguard.toml", "notes.txt")
    ok = git(repo, "commit", "-qm", "clean", env=env, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    bad_code = "from transformers import AutoModel\nm = AutoModel.from_pretrained('evil-org/backdoored')\n"
    (repo / "my train[1].py").write_text(bad_code)
    git(repo, "add", "my train[1].py")
    # the working tree no longer names the model, but the index (what would be committed) does
    (repo / "my train[1].py").write_text("print('nothing to see')\n")
    bad = git(repo, "commit", "-qm", "add model", env=env, check=False)
    assert bad.returncode != 0
    out = bad.stdout + bad.stderr  # git sends a hook's stdout to stderr
    assert "hook/denied-repo" in out and "my train[1].py" in out and "commit refused" in out
    assert "my train[1].py" not in git(repo, "ls-tree", "-r", "--name-only", "HEAD").stdout

    # the escape hatch a developer can take, documented in the hook
    (repo / "my train[1].py").write_text(bad_code.replace(")\n", ")  # hfguard: ignore\n"))
    git(repo, "add", "my train[1].py")
    assert git(repo, "commit", "-qm", "add model", env=env, check=False).returncode == 0

    # a malicious model file is scanned from the index too; no payload runs
    mark = repo.parent / "mark"
    (repo / "weights.pkl").write_bytes(evil_pickle(mark))
    git(repo, "add", "weights.pkl")
    bad = git(repo, "commit", "-qm", "weights", env=env, check=False)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "pickle/dangerous-global" in out and "weights.pkl" in out
    assert not mark.exists()
