"""A fake Hub with the real huggingface_hub client pointed at it, and the models the hooks vet."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile

import pytest

from tests.fakehub.server import FakeHub
from tests.static.fixtures import evil_pickle

LOOKALIKE = "sentence-transfomers/all-MiniLM-L6-v2"   # one letter off the popular repo


def safetensors_bytes(n: int = 16) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
                         "__metadata__": {"format": "pt"}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * n)


def torch_zip(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    return buf.getvalue()


CONFIG = json.dumps({"model_type": "bert"}).encode()


def hub_env(fake: FakeHub, home) -> dict[str, str]:
    """What a user's shell would hold for a subprocess (hook, git, pre-commit) to use the fake Hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFGUARD_"))}
    env.update({"HF_ENDPOINT": fake.url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HFGUARD_CACHE_DIR": str(home / "hfguard"),
                "HFGUARD_HUB_RETRY_WAIT": "0.01"})
    return env


@pytest.fixture
def fake_hub(isolated_hf_home, tmp_path, monkeypatch):
    """Repos: acme/evil (os.system pickle in a torch zip), acme/good (safetensors), a look-alike.
    `fake_hub.mark` is the file the evil payload would create; `fake_hub.shas` the commits."""
    from huggingface_hub import constants
    from huggingface_hub.utils import close_session

    fake = FakeHub().start()
    fake.mark = tmp_path / "payload-ran"
    fake.shas = {
        "acme/evil": fake.add_repo("acme/evil", {"config.json": CONFIG,
                                                 "pytorch_model.bin": torch_zip(evil_pickle(fake.mark))}),
        "acme/good": fake.add_repo("acme/good", {"config.json": CONFIG,
                                                 "model.safetensors": safetensors_bytes()}),
        LOOKALIKE: fake.add_repo(LOOKALIKE, {"config.json": CONFIG,
                                             "model.safetensors": safetensors_bytes()}),
    }
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(isolated_hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    monkeypatch.setenv("HFGUARD_HUB_RETRY_WAIT", "0.01")
    monkeypatch.setenv("HFGUARD_CACHE_DIR", str(tmp_path / "hfguard-cache"))
    fake.env = hub_env(fake, isolated_hf_home)
    close_session()
    yield fake
    close_session()
    fake.stop()
    assert not fake.mark.exists(), "a model payload ran"
