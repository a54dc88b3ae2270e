"""Hub-layer rules that the other hub tests exercise without naming: each made to fire for real against
the fake Hub, with the rule id asserted (tests/test_rules.py requires a firing test per rule)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from huggingface_hub import constants, snapshot_download

from testing.fakehub.builders import safetensors_bytes, write_sparse_safetensors
from tests.hub.conftest import rules, run_check

FILES = {"model.safetensors": safetensors_bytes(256), "config.json": b'{"model_type": "bert"}'}


def _errors(report: dict) -> set[str]:
    return {f["rule"] for f in report["findings"] if f["error"]} | {
        f["rule"] for fr in report["files"] for f in fr["findings"] if f["error"]}


def test_gated_repo_without_token(hub):
    hub.add_repo("acme/gated", FILES, gated="manual")
    code, report, _ = run_check("acme/gated")
    assert code == 2 and "hub/gated" in _errors(report)


def test_bad_reference(hub):
    code, report, err = run_check("not/a/model/id")
    assert code == 2 and _errors(report) == {"hub/bad-reference"}, err


class _LyingHub(BaseHTTPRequestHandler):
    """A Hub that answers every model_info with another commit than the one asked for."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        body = json.dumps({"id": "acme/m", "sha": "b" * 40, "siblings": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_hub_answering_another_commit_is_a_bad_response(hub, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LyingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        code, report, _ = run_check("acme/m@" + "a" * 40, "--no-cache")
    finally:
        server.shutdown()
    assert code == 2 and _errors(report) == {"hub/bad-response"}


def test_failed_download(hub):
    hub.add_repo("acme/m", FILES)
    # a 404 (the file vanished after the listing): the client does not retry it, unlike a 5xx
    hub.fail(r"/resolve/.*/model.safetensors", status=404, error_code="EntryNotFound", times=-1)
    code, report, _ = run_check("acme/m", "--download")
    assert code == 2 and "hub/download-failed" in _errors(report)


def test_failed_range_reads(hub):
    hub.add_repo("acme/m", FILES)
    hub.fail(r"GET /acme/m/resolve/.*/model.safetensors", status=500, times=-1)
    code, report, _ = run_check("acme/m")
    assert code == 2 and _errors(report) == {"hub/read-failed"}


def test_server_ignoring_range_on_a_large_file(hub, tmp_path):
    big = write_sparse_safetensors(tmp_path / "model.safetensors", 40 << 20)
    hub.add_repo("acme/big", {"model.safetensors": big, "config.json": b"{}"})
    hub.fail(r"GET /acme/big/resolve/.*/model.safetensors", ignore_range=True, times=-1)
    code, report, _ = run_check("acme/big")
    assert code == 2 and _errors(report) == {"hub/range-ignored"}
    assert hub.bytes_sent("/resolve/.*model.safetensors") < 40 << 20  # it hung up


def test_unreachable_hub(hub, monkeypatch):
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    monkeypatch.setenv("HF_ENDPOINT", dead)
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    code, report, _ = run_check("acme/m", "--no-cache")
    assert code == 2 and _errors(report) == {"hub/unreachable"}


def test_offline_without_and_with_a_cached_copy(hub):
    hub.add_repo("acme/m", FILES)
    code, report, _ = run_check("acme/m", env={"HF_HUB_OFFLINE": "1"})
    assert code == 2 and _errors(report) == {"hub/offline-not-cached"}
    snapshot_download("acme/m")
    code, report, _ = run_check("acme/m", "--no-cache", env={"HF_HUB_OFFLINE": "1"})
    assert code == 0 and "provenance/offline-snapshot" in rules(report)
