"""What one static check reads about a file is shared with the others in the same scan (a zip's
directory, whether a text file is a whole protocol-0 pickle): read once, and the findings are
exactly those of each check scanning the file alone."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from hfguard.checks import checks_for_tiers
from hfguard.engine import scan
from hfguard.policy import Policy
from hfguard.static.pickle import zipdir
from hfguard.static.pickle.containers import torch_zip
from hfguard.target import local_target
from testing.bombs import hand_zip
from testing.fuzz_seeds import _keras_config, keras_archive
from testing.pickles import evil_torch_zip, torch_zip_bytes


@pytest.fixture
def folder(tmp_path):
    import torch

    root = tmp_path / "m"
    root.mkdir()
    (root / "pytorch_model.bin").write_bytes(torch_zip_bytes({"w": torch.ones(2, 2)}))
    (root / "evil.pt").write_bytes(evil_torch_zip(tmp_path / "mark"))
    (root / "model.keras").write_bytes(keras_archive(_keras_config(None)))
    sio.dump(FunctionTransformer(np.log1p), root / "f.skops")
    skops_members = [(n, b"{}" if n == "schema.json" else b"x") for n in ("schema.json", "a.npy")]
    (root / "cut.skops").write_bytes(hand_zip(skops_members)[:-22])   # an error is never shared
    (root / "rows.pkl").write_bytes(pickle.dumps({"rows": [{"id": i} for i in range(50)]}, protocol=0))
    (root / "model.pt").write_bytes(b"just some notes, not a checkpoint\n")
    (root / "notes.zip").write_bytes(hand_zip([("readme.txt", b"hello")]))
    return root


def _key(f):
    return (f.file, f.check, f.rule, f.severity, f.message)


def test_shared_reads_change_no_finding(folder):
    checks = checks_for_tiers(["static"])
    together = scan(local_target([str(folder)]), Policy(), checks)
    alone = [f for c in checks for f in scan(local_target([str(folder)]), Policy(), [c]).all_findings()]
    assert sorted(map(_key, together.all_findings())) == sorted(map(_key, alone))
    rules = {f.rule for f in together.all_findings()}
    assert "provenance/format-mismatch" in rules          # the text model.pt, not rows.pkl
    assert not any(f.rule == "provenance/format-mismatch" and f.file.endswith("rows.pkl")
                   for f in together.all_findings())


def test_a_zip_directory_is_read_once_per_scan(folder, monkeypatch):
    reads: dict[str, int] = {}
    real = zipdir.read_zip_directory

    def counting(fh, size, **kw):
        name = getattr(fh, "name", "?")
        reads[str(name)] = reads.get(str(name), 0) + 1
        return real(fh, size, **kw)

    monkeypatch.setattr(zipdir, "read_zip_directory", counting)
    monkeypatch.setattr(torch_zip, "read_zip_directory", counting)
    scan(local_target([str(folder)]), Policy(), checks_for_tiers(["static"]))
    top = {k: v for k, v in reads.items() if k.startswith(str(folder))}
    # every zip-shaped file (torch, keras, skops, plain zip) was read by 3-4 checks before
    assert {k.rsplit("/", 1)[1] for k in top} >= {"pytorch_model.bin", "evil.pt", "model.keras", "f.skops",
                                                  "notes.zip"}
    assert all(n == 1 for k, n in top.items() if not k.endswith("cut.skops")), top


def test_files_that_share_a_path_string_share_no_facts(tmp_path):
    """Facts are kept per file object: of two files both named model.keras in one target (two
    staged versions, two folders given alike), the second's unreadable directory is its own."""
    from hfguard.target import Target, local_file

    good = keras_archive(_keras_config(None))
    (tmp_path / "a.keras").write_bytes(good)
    (tmp_path / "b.keras").write_bytes(good[:-22])   # no end-of-central-directory record
    files = [local_file(tmp_path / n, "model.keras") for n in ("a.keras", "b.keras")]
    report = scan(Target(name="t", source="local", files=files), Policy(), checks_for_tiers(["static"]))
    bad = [any(f.rule == "keras/bad-archive" and "unreadable" in f.message for f in fr.findings)
           for fr in report.files]
    assert bad == [False, True]
