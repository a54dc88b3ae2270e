"""Runtime guard: wrapping is idempotent and reversible; local loads are scanned before use.
(Hub downloads through the fake Hub are in test_end_to_end.py.)"""

from __future__ import annotations

import json
import pickle

import pytest

import hfguard
from hfguard.policy import Policy
from hfguard.runtime import guard as guard_mod
from testing.pickles import evil_pickle


@pytest.fixture(autouse=True)
def _guard_off():
    yield
    hfguard.guard(enable=False)


def _wrapped(fn) -> bool:
    return "__hfguard_original__" in getattr(fn, "__dict__", {})


def test_guard_is_idempotent_and_reversible():
    import huggingface_hub
    import huggingface_hub.file_download as fd

    original = fd.hf_hub_download
    assert not _wrapped(original)
    g = hfguard.guard(policy=Policy())
    hfguard.guard(policy=Policy())  # second call: nothing wrapped twice
    wrapper = huggingface_hub.hf_hub_download
    assert _wrapped(wrapper) and wrapper.__dict__["__hfguard_original__"] is original
    assert fd.hf_hub_download is wrapper and g.active
    hfguard.guard(enable=False)
    assert huggingface_hub.hf_hub_download is original and fd.hf_hub_download is original
    with hfguard.guard(policy=Policy()) as g2:
        assert _wrapped(huggingface_hub.snapshot_download) and g2.active
    assert not guard_mod.is_active() and not _wrapped(huggingface_hub.snapshot_download)
    with pytest.raises(ValueError):
        hfguard.guard(on_error="ignore")


def _model_dir(path, weights: bytes):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8,
                                                  "num_hidden_layers": 1, "num_attention_heads": 1,
                                                  "intermediate_size": 8, "vocab_size": 10}))
    (path / "pytorch_model.bin").write_bytes(weights)
    return path


def test_local_directory_is_scanned_before_transformers_loads_it(tmp_path):
    mark = tmp_path / "mark"
    evil = _model_dir(tmp_path / "evil", evil_pickle(mark))
    good = _model_dir(tmp_path / "good", pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    hfguard.guard(policy=Policy())
    from transformers import AutoConfig  # imported after guard(): patched on import

    with pytest.raises(hfguard.ModelBlocked) as info:
        AutoConfig.from_pretrained(str(evil))
    assert info.value.report.verdict.value == "BLOCK"
    assert any(f.file and f.file.endswith("pytorch_model.bin") for f in info.value.findings)
    assert AutoConfig.from_pretrained(str(good)).model_type == "bert"
    hfguard.guard(enable=False)
    assert AutoConfig.from_pretrained(str(evil)).model_type == "bert"  # off: untouched
    assert not mark.exists()


def test_torch_load_of_a_local_file_is_scanned_first(tmp_path):
    import torch

    mark = tmp_path / "mark"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(evil_pickle(mark))
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    with hfguard.guard(policy=Policy()):
        with pytest.raises(hfguard.ModelBlocked):
            torch.load(evil, weights_only=False)
        assert torch.load(good)["w"].sum().item() == 2.0
    assert not mark.exists()


def test_a_file_rewritten_after_its_directory_was_scanned_is_scanned_again(tmp_path):
    """Files of a scanned directory are remembered with their mtime: torch.load of an unchanged
    one needs no rescan, a rewritten one is scanned (and blocked) before it loads."""
    import os

    import torch

    mark = tmp_path / "mark"
    folder = tmp_path / "m"
    folder.mkdir()
    ckpt = folder / "ckpt.pt"
    torch.save({"w": torch.ones(2)}, ckpt)
    with hfguard.guard(policy=Policy()):
        guard_mod._scan_local(str(folder))
        scans = len(guard_mod._state.local)
        assert torch.load(ckpt)["w"].sum().item() == 2.0
        assert len(guard_mod._state.local) == scans           # a cache hit, no second scan
        ckpt.write_bytes(evil_pickle(mark))
        st = ckpt.stat()
        os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        with pytest.raises(hfguard.ModelBlocked):
            torch.load(ckpt, weights_only=False)
    assert not mark.exists()
