"""HDF5 objects that reach outside the file (issue 12): external storage, external links and virtual
datasets pointing at /etc/passwd, in legacy .h5 models and in .keras archives as model.weights.h5.
Real files written by h5py (libhdf5); the scan itself walks the format without h5py."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from hfguard.engine import scan
from hfguard.findings import Severity, Verdict
from hfguard.policy import Policy
from hfguard.static.formats.hdf5 import scan_hdf5
from hfguard.static.formats.keras import KerasCheck
from hfguard.target import local_target

NO_H5PY = Policy(thresholds={"static.keras": {"use-h5py": False}})
CONFIG = {"module": "keras", "class_name": "Sequential", "registered_name": None,
          "config": {"name": "sequential", "layers": [
              {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
               "config": {"name": "dense", "units": 2}}]}}


def _model_h5(target, libver: str = "earliest", plant=None, keras_attrs: bool = True) -> None:
    """A Keras-2-style weights layout; `plant(group)` adds the hostile object beside the kernel."""
    with h5py.File(target, "w", libver=libver) as f:
        if keras_attrs:
            f.attrs["model_config"] = json.dumps(CONFIG).encode()
            f.attrs["keras_version"] = b"2.15.0"
        g = f.create_group("model_weights/dense/dense")
        g.create_dataset("kernel:0", data=np.zeros((4, 2), np.float32))
        if plant is not None:
            plant(g)


def external_storage(g) -> None:
    g.create_dataset("bias:0", shape=(64,), dtype="u1", external=[("/etc/passwd", 0, 64)])


def external_link(g) -> None:
    g["bias:0"] = h5py.ExternalLink("/etc/passwd", "/")


def virtual_dataset(g) -> None:
    layout = h5py.VirtualLayout(shape=(16,), dtype="u1")
    layout[:] = h5py.VirtualSource("/etc/passwd", "data", shape=(16,))
    g.create_virtual_dataset("bias:0", layout)


def many_links_then_external(g) -> None:
    # enough links that libhdf5 moves the group to dense storage (a fractal heap)
    for i in range(40):
        g.create_dataset(f"w{i}", data=[i])
    external_link(g)


PLANTS = {"hdf5/external-storage": external_storage, "hdf5/external-link": external_link,
          "hdf5/virtual-dataset": virtual_dataset}


def _scan(path: Path, policy: Policy = NO_H5PY):
    report = scan(local_target([str(path)]), policy, [KerasCheck()])
    return report, {f.rule for f in report.all_findings()}


@pytest.mark.parametrize("libver", ["earliest", "latest"])
@pytest.mark.parametrize("rule", sorted(PLANTS))
def test_legacy_h5_reaching_etc_passwd_blocks(tmp_path, rule, libver):
    path = tmp_path / "model.h5"
    _model_h5(path, libver, PLANTS[rule])
    report, rules = _scan(path)
    assert rules == {rule} and report.verdict is Verdict.BLOCK
    [f] = report.all_findings()
    assert "/etc/passwd" in json.dumps(f.evidence) and f.location.endswith("/dense/dense/bias:0")


def test_absolute_paths_are_critical(tmp_path):
    path = tmp_path / "model.h5"
    _model_h5(path, plant=external_link)
    [f] = _scan(path)[0].all_findings()
    assert f.severity is Severity.CRITICAL and f.evidence["file"] == "/etc/passwd"


def test_link_in_dense_group_storage(tmp_path):
    path = tmp_path / "model.h5"
    _model_h5(path, plant=many_links_then_external)
    assert b"FRHP" in path.read_bytes()   # the premise: the group's links live in a fractal heap
    assert _scan(path)[1] == {"hdf5/external-link"}


@pytest.mark.parametrize("rule", sorted(PLANTS))
def test_keras_archive_weights_reaching_outside(tmp_path, rule):
    buf = io.BytesIO()
    _model_h5(buf, plant=PLANTS[rule], keras_attrs=False)
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        zf.writestr("config.json", json.dumps(CONFIG))
        zf.writestr("model.weights.h5", buf.getvalue())
    report, rules = _scan(path)
    assert rules == {rule} and report.verdict is Verdict.BLOCK
    assert report.all_findings()[0].location.startswith("model.weights.h5:/")


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_benign_models_pass(tmp_path, libver):
    path = tmp_path / "model.h5"

    def internal_links(g) -> None:
        g["alias"] = h5py.SoftLink("/model_weights/dense/dense/kernel:0")
        g.create_dataset("big", data=np.ones((256, 64), np.float32), chunks=(64, 64), compression="gzip")
        for i in range(40):
            g.create_dataset(f"w{i}", data=[i])

    _model_h5(path, libver, internal_links)
    report, rules = _scan(path, Policy())
    assert report.verdict is Verdict.PASS, rules
    with open(path, "rb") as fh:
        walked = scan_hdf5(fh, path.stat().st_size)
    assert walked.problems == [] and walked.objects >= 45


def test_hostile_structure_is_a_finding_not_a_crash(tmp_path):
    path = tmp_path / "model.h5"
    _model_h5(path, plant=external_link)
    data = bytearray(path.read_bytes())
    data[0x40:0x48] = (len(data) + 4096).to_bytes(8, "little")   # root object header past the end
    path.write_bytes(bytes(data))
    report, rules = _scan(path)
    assert "hdf5/malformed" in rules and report.verdict is not Verdict.PASS


def test_walk_limits_are_a_finding(tmp_path, monkeypatch):
    from hfguard.static.formats import hdf5

    monkeypatch.setattr(hdf5, "MAX_OBJECTS", 5)
    path = tmp_path / "model.h5"
    _model_h5(path, plant=many_links_then_external)
    assert "hdf5/too-complex" in _scan(path)[1]


def test_cve_2026_1669(tmp_path):
    """GHSA-3m4q-jmj6-r34q: .keras weights whose datasets live in /etc/passwd."""
    buf = io.BytesIO()
    _model_h5(buf, plant=external_storage, keras_attrs=False)
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(CONFIG))
        zf.writestr("model.weights.h5", buf.getvalue())
    report, rules = _scan(path, Policy())
    assert rules == {"hdf5/external-storage"} and report.verdict is Verdict.BLOCK


def test_group_btree_cycle_is_read_once(tmp_path):
    """A B-tree node whose children all point back at itself: bounded, not exponential."""
    path = tmp_path / "model.h5"
    _model_h5(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"TREE")
    used = 64
    data[at + 6:at + 8] = used.to_bytes(2, "little")
    data[at + 5] = 1                                   # an internal node: children are B-tree nodes
    body = at + 8 + 16
    for i in range(used):                              # key (8 bytes), child address (8 bytes)
        data[body + 8 + 16 * i: body + 16 + 16 * i] = at.to_bytes(8, "little")
    path.write_bytes(bytes(data))
    with open(path, "rb") as fh:
        walked = scan_hdf5(fh, len(data))
    assert walked.bytes_read < 1 << 20


def test_compressed_weights_member_is_walked_once_and_bombs_refused(tmp_path):
    buf = io.BytesIO()
    _model_h5(buf, plant=external_link, keras_attrs=False)
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", json.dumps(CONFIG))
        zf.writestr("model.weights.h5", buf.getvalue() + b"\0" * (80 << 20))   # 80 MiB of zeros: >100:1
    report, rules = _scan(path)
    assert rules == {"keras/bad-archive"} and report.verdict is Verdict.BLOCK
