"""Local paths (issue 11): fingerprints do not depend on how a path is spelled, symlinks that
leave the scanned folder are reported with their target, and a dangling or looping link is
missing evidence (ERROR), never a silent skip."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from hfguard.cli import main
from testing.pickles import evil_pickle, op_str


def _unknown_global_pickle() -> bytes:
    """mypkg.helper(): an unknown global, a medium finding a baseline may accept."""
    return b"\x80\x04" + op_str("mypkg") + op_str("helper") + b"\x93)R."


def _scan(cwd, *args: str) -> tuple[int, dict]:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = CliRunner().invoke(main, ["scan", "-q", "--format", "json", *args])
    finally:
        os.chdir(old)
    return res.exit_code, json.loads(res.stdout)


def _fingerprints(doc: dict) -> set[str]:
    return {f["fingerprint"] for fr in doc["files"] for f in fr["findings"]}


@pytest.mark.parametrize("git_repo", [False, True])
def test_fingerprint_does_not_depend_on_the_path_spelling(tmp_path, git_repo):
    if git_repo:
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "mal").mkdir()
    (tmp_path / "mal" / "x.pkl").write_bytes(_unknown_global_pickle())
    spellings = [(tmp_path, "mal/x.pkl"), (tmp_path, str(tmp_path / "mal" / "x.pkl")),
                 (tmp_path / "mal", "x.pkl"), (tmp_path, "mal"), (tmp_path, "./mal/")]
    if git_repo:   # the repository is the root: its whole tree too
        spellings.append((tmp_path, "."))
    prints = []
    for cwd, arg in spellings:
        code, doc = _scan(cwd, arg)
        assert code == 1 and doc["verdict"] == "FLAG"
        prints.append(_fingerprints(doc))
    assert all(p == prints[0] for p in prints) and len(prints[0]) == 1
    # a baseline recorded one way applies to every other spelling
    (tmp_path / "hfguard.toml").write_text(f"baseline = {sorted(prints[0])}\n")
    for cwd, arg in spellings:
        code, doc = _scan(cwd, arg)
        assert code == 0 and doc["verdict"] == "PASS", arg


def test_symlink_leaving_the_folder_is_reported_with_its_target_and_scanned(tmp_path):
    outside = tmp_path / "elsewhere" / "payload.bin"
    outside.parent.mkdir()
    outside.write_bytes(evil_pickle(tmp_path / "mark"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "pytorch_model.bin").symlink_to(outside)
    (model / "up").symlink_to(tmp_path)              # a directory loop: not followed
    code, doc = _scan(tmp_path, "model")
    assert code == 1 and doc["verdict"] == "BLOCK"
    (fr,) = doc["files"]
    rules = {f["rule"]: f for f in fr["findings"]}
    assert {"file/symlink-outside-root", "pickle/dangerous-global"} <= set(rules)
    link = rules["file/symlink-outside-root"]
    assert link["severity"] == "medium" and link["evidence"]["target"] == str(outside.resolve())
    assert str(outside.resolve()) in link["message"]


def test_symlink_inside_the_folder_is_not_reported(tmp_path):
    model = tmp_path / "model"
    (model / "blobs").mkdir(parents=True)
    (model / "blobs" / "abc").write_bytes(_unknown_global_pickle())
    (model / "x.pkl").symlink_to("blobs/abc")
    code, doc = _scan(tmp_path, "model")
    assert not any(f["rule"] == "file/symlink-outside-root"
                   for fr in doc["files"] for f in fr["findings"])


def test_dangling_or_looping_weights_are_missing_evidence(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    code, doc = _scan(tmp_path, "model")
    assert code == 2 and doc["verdict"] == "ERROR"
    bad = {fr["path"]: fr for fr in doc["files"]}["model/model.safetensors"]
    assert bad["verdict"] == "ERROR" and "gone.safetensors" in bad["findings"][0]["message"]
    (model / "model.safetensors").unlink()
    (model / "a.bin").symlink_to("b.bin")
    (model / "b.bin").symlink_to("a.bin")
    code, doc = _scan(tmp_path, "model")
    assert code == 2 and {fr["path"] for fr in doc["files"] if fr["verdict"] == "ERROR"} == {
        "model/a.bin", "model/b.bin"}


def test_fifos_and_devices_where_weights_belong_are_missing_evidence_never_opened(tmp_path):
    # a FIFO would hang a reader, a device has no fixed content: either is an ERROR, never a
    # silent skip (which left the folder PASS) and never opened (a FIFO with no writer blocks)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    os.mkfifo(model / "pytorch_model.bin")
    (model / "model.safetensors").symlink_to(os.devnull)
    code, doc = _scan(tmp_path, "model")
    assert code == 2 and doc["verdict"] == "ERROR"
    bad = {fr["path"]: fr for fr in doc["files"] if fr["verdict"] == "ERROR"}
    assert set(bad) == {"model/pytorch_model.bin", "model/model.safetensors"}
    assert "a FIFO" in bad["model/pytorch_model.bin"]["findings"][0]["message"]
    assert "character device" in bad["model/model.safetensors"]["findings"][0]["message"]
    code, doc = _scan(tmp_path, "model/pytorch_model.bin")    # named on the command line
    assert code == 2 and doc["files"][0]["findings"][0]["rule"] == "file/unreadable"


def test_a_folder_that_cannot_be_listed_is_missing_evidence(tmp_path):
    # os.walk leaves out a folder it cannot list (permissions; here a path longer than PATH_MAX,
    # which root meets too): the pickle inside was never seen and the folder PASSed
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    fd = os.open(model, os.O_RDONLY)
    try:
        for i in range(20):   # 20 x 243 characters: past PATH_MAX (4096) as a path
            os.mkdir(f"d{i:02d}" + "x" * 240, dir_fd=fd)
            fd, old = os.open(f"d{i:02d}" + "x" * 240, os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        out = os.open("pytorch_model.bin", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, evil_pickle(tmp_path / "mark"))
        os.close(out)
    finally:
        os.close(fd)
    code, doc = _scan(tmp_path, "model")
    assert code == 2 and doc["verdict"] == "ERROR"
    (bad,) = [fr for fr in doc["files"] if fr["verdict"] == "ERROR"]
    assert bad["path"].startswith("model/d00") and bad["findings"][0]["rule"] == "file/unreadable"
