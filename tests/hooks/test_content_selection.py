"""The hooks pick model files by content, never by name alone (issue 11): a malicious pickle
committed as `checkpoint.dat` or `model_weights` is scanned and blocks."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess

import pytest
from click.testing import CliRunner

from hfguard.cli import main
from hfguard.sniff import carries_model
from testing.pickles import evil_pickle
from tests.hooks.conftest import torch_zip
from tests.hooks.test_githooks import BIN, git, repo  # noqa: F401 - the fixture, reused


def _disguised(tmp_path, mark):
    """Malicious models under names no extension list knows, and benign text beside them."""
    files = {
        "checkpoint.dat": evil_pickle(mark, protocol=2),
        "model_weights": torch_zip(evil_pickle(mark)),
        "notes.txt": evil_pickle(mark, protocol=0),          # protocol 0 is printable text
        "train.py": b"import torch\nprint('train')\n",
        "README.md": b"# Project\n\nSee train.py.\n",
        "data.json": b'{"lr": 0.1}\n',
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return files


def test_model_files_are_chosen_by_content():
    pad = b"S'" + b"a" * 2000 + b"'\np0\n0cos\nsystem\n"   # the global far past the head
    for proto in range(6):
        assert carries_model(pickle.dumps({"w": 1}, protocol=proto), "data")
    assert carries_model(pad[:512], "blob")
    for text in (b"import os\nprint(1)\n", b"# Title\n\nSome prose.\n", b'{"a": [1, 2]}',
                 b"name: x\nmodel: y\n", b"Copyright 2024\n", b""):
        assert not carries_model(text, "f.txt"), text
    assert carries_model(b"", "empty.safetensors")        # a model name is enough on its own


def test_hook_files_blocks_disguised_pickles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mark = tmp_path / "mark"
    files = _disguised(tmp_path, mark)
    res = CliRunner().invoke(main, ["hook", "files", "-q", "--format", "json", *files])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and doc["verdict"] == "BLOCK"
    assert {f["path"]: f["verdict"] for f in doc["files"]} == {
        "checkpoint.dat": "BLOCK", "model_weights": "BLOCK", "notes.txt": "BLOCK"}
    assert not mark.exists()


def test_hook_staged_blocks_disguised_pickles_from_the_index(repo, monkeypatch):  # noqa: F811
    monkeypatch.chdir(repo)
    mark = repo.parent / "mark"
    files = _disguised(repo, mark)
    git(repo, "add", *files)
    (repo / "checkpoint.dat").write_bytes(b"harmless now\n")   # the index is what counts
    res = CliRunner().invoke(main, ["hook", "staged", "-q", "--format", "json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and doc["verdict"] == "BLOCK", res.output
    assert {f["path"]: f["verdict"] for f in doc["files"]} == {
        "checkpoint.dat": "BLOCK", "model_weights": "BLOCK", "notes.txt": "BLOCK"}
    assert doc["stats"]["model_files"] == 3
    assert not mark.exists()


@pytest.mark.parametrize("name", ["checkpoint.dat", "model_weights"])
def test_plain_git_hook_refuses_a_disguised_pickle(repo, monkeypatch, name):  # noqa: F811
    from tests.hooks.test_githooks import _install

    assert _install(repo, monkeypatch).exit_code == 0
    mark = repo.parent / "mark"
    (repo / name).write_bytes(evil_pickle(mark))
    git(repo, "add", name)
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "HF_HUB_OFFLINE": "1"}
    bad = git(repo, "commit", "-qm", "weights", env=env, check=False)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "pickle/dangerous-global" in out and name in out
    assert not mark.exists()


def test_hook_output_escapes_staged_names(repo, monkeypatch):  # noqa: F811
    monkeypatch.chdir(repo)
    name = "w\nhfguard staged changes: PASS (0 files)\x1b[2J"
    (repo / name).write_bytes(evil_pickle(repo.parent / "mark"))
    git(repo, "add", "-A")
    res = subprocess.run([os.path.join(BIN, "hfguard"), "hook", "staged"], cwd=repo,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 1
    assert "\x1b" not in res.stdout + res.stderr
    assert not any(line.startswith("hfguard staged changes: PASS") for line in res.stdout.splitlines())
    assert "w\\nhfguard staged changes: PASS (0 files)\\x1b[2J" in res.stdout


def test_python_scripts_are_read_for_references_whatever_their_name(repo, monkeypatch):  # noqa: F811
    # an executable script without .py (its shebang says Python) and a .pyw load models as
    # surely as train.py: both hooks and the lock read them (were skipped: PASS, 0 files)
    from hfguard.hooks.locking import repo_files

    monkeypatch.chdir(repo)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (repo / "bin").mkdir()
    (repo / "bin" / "train").write_text('#!/usr/bin/env python3\nfrom transformers import AutoModel\n'
                                        'AutoModel.from_pretrained("acme/scripted")\n')
    (repo / "gui.pyw").write_text('from transformers import AutoModel\n'
                                  'AutoModel.from_pretrained("acme/windowed")\n')
    (repo / "notes").write_text('AutoModel.from_pretrained("acme/not-python")\n')   # no shebang: not a script
    git(repo, "add", "-A")

    def not_locked(args: list[str]) -> set[tuple[str, str]]:
        res = CliRunner().invoke(main, [*args, "-q", "--format", "json"])
        doc = json.loads(res.stdout)
        assert res.exit_code == 2 and doc["verdict"] == "ERROR", res.output
        return {(f["file"], f["evidence"]["model"]) for f in doc["findings"]
                if f["rule"] == "hook/not-locked"}

    expected = {("bin/train", "acme/scripted"), ("gui.pyw", "acme/windowed")}
    assert not_locked(["hook", "staged"]) == expected
    assert not_locked(["hook", "refs", "bin/train", "gui.pyw", "notes"]) == expected
    assert {"bin/train", "gui.pyw"} <= {os.path.relpath(p, repo) for p in repo_files(repo)}


def test_a_committed_symlink_that_leaves_the_repository_is_reported(repo, monkeypatch):  # noqa: F811
    # git stores only the target path: what loads from the checkout is whatever that path holds on
    # the machine that checks it out. Both hooks skipped symlinks (PASS)
    monkeypatch.chdir(repo)
    outside = repo.parent / "outside.bin"
    outside.write_bytes(b"weights")
    (repo / "models").mkdir()
    (repo / "models" / "model.bin").symlink_to("../../outside.bin")
    (repo / "pytorch_model.bin").symlink_to(outside)                   # absolute
    (repo / "models" / "real.json").write_text("{}")
    (repo / "alias.json").symlink_to("models/real.json")               # stays inside: fine
    git(repo, "add", "-A")

    def escaping(args: list[str]) -> dict[str, str]:
        res = CliRunner().invoke(main, [*args, "-q", "--format", "json"])
        doc = json.loads(res.stdout)
        assert res.exit_code == 1 and doc["verdict"] == "FLAG", res.output
        found = doc["findings"] + [f for fr in doc["files"] for f in fr["findings"]]
        return {f["file"]: f["evidence"]["target"] for f in found if f["rule"] == "file/symlink-outside-root"}

    expected = {"models/model.bin": "../../outside.bin", "pytorch_model.bin": str(outside)}
    assert escaping(["hook", "staged"]) == expected
    assert escaping(["hook", "files", "models/model.bin", "pytorch_model.bin", "alias.json"]) == expected


def _lfs_pointer(root, data: bytes, *, store: bool = True) -> bytes:
    """What `git add` stages for a git-lfs tracked file: the pointer; git-lfs keeps the content in
    .git/lfs/objects (written here as its clean filter does, without needing git-lfs)."""
    oid = hashlib.sha256(data).hexdigest()
    if store:
        obj = root / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def test_staged_git_lfs_pointers_are_vetted_by_their_object(repo, monkeypatch):  # noqa: F811
    # the index holds a pointer, the checkout the object: the pointer was judged as a text file
    # named .bin (format-mismatch FLAG) and the weights it stands for were never read
    monkeypatch.chdir(repo)
    mark = repo.parent / "mark"
    (repo / "pytorch_model.bin").write_bytes(_lfs_pointer(repo, evil_pickle(mark)))
    (repo / "clean.bin").write_bytes(_lfs_pointer(repo, pickle.dumps({"w": [1.0, 2.0]}, protocol=4)))
    git(repo, "add", "-A")

    def staged() -> dict:
        return json.loads(CliRunner().invoke(main, ["hook", "staged", "-q", "--format", "json"]).stdout)

    doc = staged()
    assert doc["verdict"] == "BLOCK"
    assert {f["path"]: f["verdict"] for f in doc["files"]} == {"pytorch_model.bin": "BLOCK",
                                                                "clean.bin": "PASS"}
    assert not mark.exists()
    git(repo, "rm", "-q", "--cached", "pytorch_model.bin")
    (repo / "pytorch_model.bin").write_bytes(_lfs_pointer(repo, b"not in the store", store=False))
    git(repo, "add", "-A")
    doc = staged()
    assert doc["verdict"] == "ERROR"
    assert [(f["rule"], f["file"]) for f in doc["findings"]] == [
        ("hook/unreadable-staged-file", "pytorch_model.bin")]


def test_a_staged_source_too_large_to_read_is_missing_evidence(repo, monkeypatch):  # noqa: F811
    import hfguard.hooks.staged as staged

    monkeypatch.chdir(repo)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(staged, "MAX_TEXT", 64)
    (repo / "train.py").write_text('from_pretrained("acme/padded")\n' + "#" * 100 + "\n")
    git(repo, "add", "-A")
    res = CliRunner().invoke(main, ["hook", "staged", "-q", "--format", "json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 2 and doc["verdict"] == "ERROR"
    assert [(f["rule"], f["file"]) for f in doc["findings"]] == [("hook/unreadable-source", "train.py")]
