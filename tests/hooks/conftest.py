"""The fake Hub of tests/hub (real huggingface_hub client pointed at a local server), holding the
models the hooks vet."""

from __future__ import annotations

import json
import os

import pytest

from testing.fakehub.builders import safetensors_bytes, torch_zip_bytes
from testing.fakehub.server import FakeHub
from testing.pickles import evil_pickle
from tests.hub.conftest import hub  # noqa: F401 - the fixture, reused

LOOKALIKE = "sentence-transfomers/all-MiniLM-L6-v2"   # one letter off the popular repo
CONFIG = json.dumps({"model_type": "bert"}).encode()


def torch_zip(payload: bytes) -> bytes:
    return torch_zip_bytes(payload)


def hub_env(fake: FakeHub, home) -> dict[str, str]:
    """What a user's shell would hold for a subprocess (hook, git, pre-commit) to use the fake Hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HFGUARD_"))}
    env.update({"HF_ENDPOINT": fake.url, "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HFGUARD_CACHE_DIR": str(home / "hfguard"),
                "HFGUARD_HUB_RETRY_WAIT": "0.01"})
    return env


@pytest.fixture
def fake_hub(hub, isolated_hf_home, tmp_path):  # noqa: F811 - `hub` is the fixture imported above
    """Repos: acme/evil (os.system pickle in a torch zip), acme/good (safetensors), a look-alike.
    `fake_hub.mark` is the file the evil payload would create; `fake_hub.shas` the commits."""
    hub.mark = tmp_path / "payload-ran"
    hub.shas = {
        "acme/evil": hub.add_repo("acme/evil", {"config.json": CONFIG,
                                               "pytorch_model.bin": torch_zip(evil_pickle(hub.mark))}),
        "acme/good": hub.add_repo("acme/good", {"config.json": CONFIG,
                                               "model.safetensors": safetensors_bytes(16)}),
        LOOKALIKE: hub.add_repo(LOOKALIKE, {"config.json": CONFIG,
                                           "model.safetensors": safetensors_bytes(16)}),
    }
    hub.env = hub_env(hub, isolated_hf_home)
    yield hub
    assert not hub.mark.exists(), "a model payload ran"
