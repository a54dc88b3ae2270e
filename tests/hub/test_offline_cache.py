"""The verdict cache answers only for the content it judged: offline, a file added to (or re-linked
in) the cached snapshot is re-scanned; offline --download re-hashes before any cached answer and
removes a tampered blob from the HF cache."""

from __future__ import annotations

import hashlib
import os
import pickle

from testing.fakehub.builders import os_system_pickle, safetensors_bytes
from tests.hub.conftest import rules, run_check

FILES = {"model.safetensors": safetensors_bytes(4096), "config.json": b'{"model_type": "bert"}'}


def snapshot_of(repo: str, sha: str):
    from hfguard.target import hf_cache_dir

    return hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots" / sha


def plant_blob(snapshot, name: str, data: bytes) -> None:
    """Add a file to a cached snapshot the way huggingface_hub lays it out: a content-addressed blob."""
    blob = snapshot.parent.parent / "blobs" / hashlib.sha256(data).hexdigest()
    blob.write_bytes(data)
    os.symlink(os.path.relpath(blob, snapshot), snapshot / name)


def test_a_pickle_added_to_the_cached_snapshot_is_not_answered_by_the_old_pass(hub, monkeypatch, tmp_path):
    sha = hub.add_repo("acme/tiny", FILES)
    code, first, _ = run_check("acme/tiny", "--download")
    assert code == 0 and first["verdict"] == "PASS"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, second, _ = run_check("acme/tiny")
    assert code == 0 and second["verdict"] == "PASS"
    code, third, _ = run_check("acme/tiny")
    assert third["stats"]["cached"] is True          # the unchanged snapshot is answered from the cache
    plant_blob(snapshot_of("acme/tiny", sha), "pytorch_model.bin",
               os_system_pickle(f"touch {tmp_path / 'PWNED'}"))
    code, fourth, _ = run_check("acme/tiny")
    assert fourth["stats"]["cached"] is False
    assert fourth["verdict"] == "BLOCK" and code == 1
    assert "pytorch_model.bin" in {f["path"] for f in fourth["files"]}
    assert not (tmp_path / "PWNED").exists()
    # a plain (not content-addressed) file is hashed into the key too
    (snapshot_of("acme/tiny", sha) / "pytorch_model.bin").unlink()
    assert run_check("acme/tiny")[1]["stats"]["cached"] is True
    (snapshot_of("acme/tiny", sha) / "extra.pkl").write_bytes(os_system_pickle("true"))
    code, fifth, _ = run_check("acme/tiny")
    assert fifth["stats"]["cached"] is False and fifth["verdict"] == "BLOCK"


def test_offline_download_rehashes_even_with_a_cached_verdict_and_evicts_the_tampered_blob(hub, monkeypatch):
    sha = hub.add_repo("acme/tiny", FILES)
    assert run_check("acme/tiny", "--download")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, report, _ = run_check("acme/tiny", "--download")
    assert code == 0 and report["verdict"] == "PASS"
    assert run_check("acme/tiny", "--download")[1]["stats"]["cached"] is True
    link = snapshot_of("acme/tiny", sha) / "model.safetensors"
    blob = link.resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1                                    # same name, same size, other bytes
    blob.write_bytes(bytes(data))
    code, report, err = run_check("acme/tiny", "--download")
    assert code == 2 and report["verdict"] == "ERROR"
    assert "provenance/hash-mismatch" in rules(report) and "does not match" in err
    assert not blob.exists() and not os.path.lexists(link)
    # the honest file stays
    assert (snapshot_of("acme/tiny", sha) / "config.json").is_file()


def test_a_blob_rewritten_in_place_to_the_same_size_is_scanned_again_offline(hub, monkeypatch, tmp_path):
    # the blob keeps its (content-hash) name and its size: only its identity on disk tells
    evil = os_system_pickle(f"touch {tmp_path / 'PWNED'}")
    benign = next(b for k in range(200) if len(b := pickle.dumps({"w": "x" * k}, protocol=2)) == len(evil))
    sha = hub.add_repo("acme/tiny", {"pytorch_model.bin": benign, "config.json": b"{}"})
    assert run_check("acme/tiny", "--download")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_check("acme/tiny")[1]["verdict"] == "PASS"
    assert run_check("acme/tiny")[1]["stats"]["cached"] is True
    (snapshot_of("acme/tiny", sha) / "pytorch_model.bin").resolve().write_bytes(evil)
    code, report, _ = run_check("acme/tiny")
    assert report["stats"]["cached"] is False
    assert code == 1 and report["verdict"] == "BLOCK" and "pickle/dangerous-global" in rules(report)
    assert not (tmp_path / "PWNED").exists()


def test_a_cached_snapshot_file_that_is_dangling_or_a_fifo_is_missing_evidence(hub, monkeypatch, tmp_path):
    # was left out of the offline listing (PASS); a FIFO must also never be opened for reading
    # (hashing, the card, the scan): the check ends with ERROR instead of blocking
    sha = hub.add_repo("acme/tiny", FILES)
    assert run_check("acme/tiny", "--download")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = snapshot_of("acme/tiny", sha)
    (snapshot / "pytorch_model.bin").symlink_to(tmp_path / "gone.bin")
    os.mkfifo(snapshot / "README.md")
    os.mkfifo(tmp_path / "fifo")
    (snapshot / "tf_model.h5").symlink_to(tmp_path / "fifo")
    for args in ((), ("--download",)):
        code, report, _ = run_check("acme/tiny", *args)
        assert code == 2 and report["verdict"] == "ERROR", args
        bad = {fr["path"] for fr in report["files"] if fr["verdict"] == "ERROR"}
        assert {"pytorch_model.bin", "README.md", "tf_model.h5"} <= bad, args


def test_offline_a_ref_is_a_file_under_refs_and_never_blocks(hub, monkeypatch, tmp_path):
    # the revision may come from a committed file (a lock entry, a reference): it never names a
    # file outside refs/, and a FIFO there is no ref (reading it would block the check forever)
    sha = hub.add_repo("acme/tiny", FILES)
    assert run_check("acme/tiny", "--download")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = snapshot_of("acme/tiny", sha).parent.parent
    assert run_check("acme/tiny")[1]["revision"] == sha
    (folder / "planted").write_text(sha)
    code, report, _ = run_check("acme/tiny@../planted")
    assert code == 2 and rules(report) == {"hub/offline-not-cached"}
    (folder / "refs" / "main").unlink()
    os.mkfifo(folder / "refs" / "main")
    code, report, _ = run_check("acme/tiny")
    assert code == 2 and rules(report) == {"hub/offline-not-cached"}
