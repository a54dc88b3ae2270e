"""fleet/task-failed: a task that cannot vet its repo reports ERROR for it, never nothing."""

from __future__ import annotations

from hfguard.fleet.run import vet_one
from hfguard.policy import Policy
from testing.fakehub.builders import safetensors_bytes
from tests.hub.conftest import hub  # noqa: F401 - the fake-Hub fixture


def test_a_task_that_fails_is_an_error_report(hub, tmp_path, monkeypatch):  # noqa: F811
    hub.add_repo("acme/m", {"model.safetensors": safetensors_bytes(64), "config.json": b"{}"})
    (tmp_path / "not-a-folder").write_text("")   # the verdict cache cannot live under a file
    monkeypatch.setenv("HFGUARD_CACHE_DIR", str(tmp_path / "not-a-folder" / "hfguard"))
    doc = vet_one("acme/m", Policy(), {}, None, 60.0)
    assert doc["verdict"] == "ERROR"
    [finding] = doc["findings"]
    assert finding["rule"] == "fleet/task-failed" and finding["error"] is True
    assert "acme/m" in finding["message"]
