"""The new format checks over HTTP Range reads from a (fake) Hub: an HDF5 weights file whose link
reaches /etc/passwd is BLOCKed (the object walk reads headers only), static.keras reads the Keras
config from the root group's header, and its fallback byte scan reads a bounded prefix, saying so
when it stops there without a config."""

from __future__ import annotations

import io

import h5py
import numpy as np

from tests.hub.conftest import rules, run_check


def _weights(leak: bool, trained: bool = False) -> bytes:
    """8 MiB of weights (zeros, or random ones that do not compress, like trained weights)."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for layer in range(8):
            g = f.create_group(f"model_weights/layer_{layer}/layer_{layer}")
            kernel = rng.standard_normal((512, 512)).astype(np.float32) if trained else np.zeros((512, 512))
            g.create_dataset("kernel:0", data=kernel.astype(np.float32))
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
    # no model_config among the root's attributes: nothing to look for, headers only are read
    assert "keras/h5-not-fully-scanned" not in rules(report)
    assert hub.bytes_sent("tf_model.h5") < len(_weights(leak=False)) // 4


def test_hub_h5_with_attributes_in_dense_storage_scans_a_bounded_prefix(hub):
    """Root attributes in dense storage are not listed by the walk: the config byte scan reads a
    bounded prefix over Range requests and says where it stopped."""
    buf = io.BytesIO()
    with h5py.File(buf, "w", libver="latest") as f:
        for i in range(12):
            f.attrs[f"note_{i}"] = b"x" * 100
        f.create_dataset("kernel", data=np.zeros((1024, 2048), np.float32))
    data = buf.getvalue()
    hub.add_repo("acme/dense", {"tf_model.h5": data, "config.json": b"{}"})
    _, report, _ = run_check("acme/dense")
    notes = [f for fr in report["files"] for f in fr["findings"]]
    [note] = [f for f in notes if f["rule"] == "keras/h5-not-fully-scanned"]
    assert note["evidence"]["remote"] and hub.bytes_sent("tf_model.h5") < len(data) // 4


def _legacy_model(lambda_code: bytes | None) -> bytes:
    """A Keras 2 `.h5` model: model_config as a root attribute (written first, as Keras does), then
    8 MiB of weights; its Lambda layer (if any) holds marshalled bytecode."""
    import base64
    import json

    layers = [{"class_name": "Dense", "config": {"name": "dense", "units": 2}}]
    if lambda_code is not None:
        code = base64.encodebytes(lambda_code).decode("ascii")
        layers.append({"class_name": "Lambda", "config": {"name": "lambda", "function": [code, None, None],
                                                          "function_type": "lambda"}})
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential",
                                              "config": {"name": "s", "layers": layers}}).encode()
        for layer in range(8):
            g = f.create_group(f"model_weights/layer_{layer}/layer_{layer}")
            g.create_dataset("kernel:0", data=np.ones((512, 512), np.float32))
    return buf.getvalue()


def test_hub_h5_keras_config_is_read_without_fetching_the_weights(hub):
    """The Keras config scan of a remote `.h5` reads a bounded prefix over Range requests, not the
    file: the Lambda's bytecode is found and most of the 8 MiB of weights are never served."""
    import marshal

    data = _legacy_model(marshal.dumps(compile("import os\nos.system('id')\n", "<lambda>", "exec")))
    hub.add_repo("acme/lambda", {"tf_model.h5": data, "config.json": b"{}"})
    code, report, _ = run_check("acme/lambda")
    assert "keras/lambda-bytecode" in rules(report) and report["verdict"] == "BLOCK"
    served = hub.bytes_sent("tf_model.h5")
    assert served < len(data) // 4, (served, len(data))


def _keras_archive(weights: bytes, method: int) -> bytes:
    import json
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        zf.writestr("config.json", json.dumps({"module": "keras", "class_name": "Sequential",
                                               "config": {"name": "s", "layers": []}}))
        zf.writestr("model.weights.h5", weights, compress_type=method)
    return buf.getvalue()


def test_hub_keras_weights_are_walked_in_place(hub):
    """A stored model.weights.h5 (what Keras writes) in a remote .keras is walked by its headers:
    the link to /etc/passwd is found and the weights are not fetched."""
    import zipfile

    data = _keras_archive(_weights(leak=True), zipfile.ZIP_STORED)
    hub.add_repo("acme/keras", {"model.keras": data})
    _, report, _ = run_check("acme/keras")
    assert "hdf5/external-link" in rules(report) and report["verdict"] == "BLOCK"
    assert hub.bytes_sent("model.keras") < len(data) // 4


def test_hub_keras_compressed_weights_past_the_remote_bound_are_a_finding(hub, monkeypatch):
    """Walking a compressed member needs all of it: past the remote bound it is not fetched, and
    the report says so (FLAG, not a silent PASS)."""
    import zipfile

    from hfguard.static.formats import keras

    monkeypatch.setattr(keras, "REMOTE_INFLATED_WEIGHTS", 1 << 16)
    data = _keras_archive(_weights(leak=True, trained=True), zipfile.ZIP_DEFLATED)
    hub.add_repo("acme/keras", {"model.keras": data})
    _, report, _ = run_check("acme/keras")
    assert "keras/h5-not-fully-scanned" in rules(report) and report["verdict"] != "PASS"
    assert hub.bytes_sent("model.keras") < len(data) // 2
