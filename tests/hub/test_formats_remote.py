"""The new format checks over HTTP Range reads from a (fake) Hub: an HDF5 weights file whose link
reaches /etc/passwd is BLOCKed (the object walk reads headers only; static.keras' config byte scan
still reads the file, as it does locally without h5py)."""

from __future__ import annotations

import io

import h5py
import numpy as np

from tests.hub.conftest import rules, run_check


def _weights(leak: bool) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for layer in range(8):
            g = f.create_group(f"model_weights/layer_{layer}/layer_{layer}")
            g.create_dataset("kernel:0", data=np.zeros((512, 512), np.float32))
        if leak:
            f["model_weights/layer_0/layer_0"]["bias:0"] = h5py.ExternalLink("/etc/passwd", "/")
    return buf.getvalue()


def test_hub_h5_with_external_link_blocks_without_downloading_the_weights(hub):
    data = _weights(leak=True)
    hub.add_repo("acme/leaky", {"tf_model.h5": data, "config.json": b"{}"})
    code, report, _ = run_check("acme/leaky")
    assert "hdf5/external-link" in rules(report) and report["verdict"] == "BLOCK" and code != 0


def test_hub_h5_without_links_passes(hub):
    hub.add_repo("acme/plain", {"tf_model.h5": _weights(leak=False), "config.json": b"{}"})
    code, report, _ = run_check("acme/plain")
    assert "hdf5/external-link" not in rules(report)
    assert report["verdict"] in ("PASS", "FLAG"), rules(report)
