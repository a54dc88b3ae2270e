"""One wall-clock deadline per check over every Hub request: connect, headers, body, retries and
Retry-After waits. Real huggingface_hub against the fake Hub's hang / trickle / 429 faults; wall
times are asserted only as loose upper bounds (far above the deadline, far below the old hangs)."""

from __future__ import annotations

import time

import numpy as np
from safetensors.numpy import save as st_bytes

from testing.fakehub.builders import safetensors_bytes
from tests.hub.conftest import rules, run_check

FILES = {"model.safetensors": safetensors_bytes(64), "config.json": b'{"model_type": "bert"}'}


def timed_check(*args: str) -> tuple[int, dict, str, float]:
    start = time.monotonic()
    code, report, err = run_check(*args)
    return code, report, err, time.monotonic() - start


def test_a_hub_that_trickles_the_metadata_body_is_cut_at_the_deadline(hub):
    hub.add_repo("acme/tiny", FILES)
    # headers at once, then one byte every 0.2 s: no single read ever stalls long enough to time out
    hub.fail(r"GET /api/models/acme/tiny$", trickle=0.2, times=-1)
    code, report, err, took = timed_check("acme/tiny", "--deadline", "2")
    assert code == 2 and report["verdict"] == "ERROR"
    assert rules(report) == {"hub/timeout"}
    assert took < 10
    assert hub.requests(r"GET /api/models/acme/tiny$")[0]["sent"] >= 1   # the body did start


def test_an_all_hanging_hub_ends_within_the_deadline(hub, monkeypatch):
    monkeypatch.setenv("HFGUARD_HUB_RETRIES", "10")
    hub.add_repo("acme/tiny", FILES)
    hub.fail(r".", delay=60, times=-1)
    code, report, _, took = timed_check("acme/tiny", "--deadline", "1")
    assert code == 2 and rules(report) == {"hub/timeout"}
    assert took < 10


def test_a_hanging_tree_listing_is_bounded_by_the_deadline_not_the_clients_retries(hub, monkeypatch):
    monkeypatch.setenv("HFGUARD_HUB_DEADLINE", "1")     # the environment sets it too
    monkeypatch.setenv("HFGUARD_HUB_RETRIES", "10")
    hub.add_repo("acme/tiny", FILES)
    hub.fail(r"GET /api/models/acme/tiny/tree/", delay=60, times=-1)
    code, report, _, took = timed_check("acme/tiny")
    assert code == 2 and rules(report) == {"hub/timeout"}
    assert took < 10


def test_hanging_range_reads_of_many_files_share_one_deadline(hub, monkeypatch):
    monkeypatch.setenv("HFGUARD_HUB_TIMEOUT", "1")
    files = {f"part-{i:02d}.safetensors": safetensors_bytes(16) for i in range(40)}
    hub.add_repo("acme/many", files)
    hub.fail(r"GET /acme/many/resolve/", delay=60, times=-1)
    code, report, _, took = timed_check("acme/many", "--deadline", "2")
    assert code == 2 and report["verdict"] == "ERROR"
    assert {f["verdict"] for f in report["files"]} == {"ERROR"}
    # the first reads time out on their own; once the deadline is spent the rest start no request
    assert sum("deadline" in fr["findings"][0]["message"] for fr in report["files"]) >= 30
    assert took < 15   # was ~6 s per file


def test_a_trickling_range_read_is_cut(hub, monkeypatch):
    hub.add_repo("acme/tiny", FILES)
    hub.fail(r"GET /acme/tiny/resolve/.*model.safetensors", trickle=0.2, times=-1)
    code, report, _, took = timed_check("acme/tiny", "--deadline", "2")
    assert code == 2
    [fr] = [f for f in report["files"] if f["path"] == "model.safetensors"]
    message = fr["findings"][0]["message"]
    assert fr["verdict"] == "ERROR" and ("deadline" in message or "timed out" in message), message
    assert took < 10


def test_retry_after_is_honoured_and_counted_against_the_deadline(hub):
    hub.add_repo("acme/tiny", FILES)
    hub.fail(r"GET /api/models/acme/tiny$", status=429, headers={"Retry-After": "1"}, times=1)
    code, report, err, _ = timed_check("acme/tiny")
    assert code == 0 and report["verdict"] == "PASS", report
    first, second = hub.requests(r"GET /api/models/acme/tiny$")[:2]
    assert second["t"] - first["t"] >= 0.9      # the server's wait, not the 0.01 s test backoff
    assert "retrying in 1.0s" in err
    # a wait the deadline cannot afford ends the check at once, with the reason
    hub.fail(r"GET /api/models/acme/tiny$", status=503, headers={"Retry-After": "300"}, times=-1)
    n = len(hub.requests(r"GET /api/models/acme/tiny$"))
    code, report, err, took = timed_check("acme/tiny", "--no-cache", "--deadline", "5")
    assert code == 2 and rules(report) == {"hub/timeout"} and "retry after 300s" in err
    assert len(hub.requests(r"GET /api/models/acme/tiny$")) == n + 1
    assert took < 4


def test_range_reads_honour_retry_after_in_the_same_loop(hub):
    hub.add_repo("acme/tiny", FILES)
    hub.fail(r"GET /acme/tiny/resolve/.*model.safetensors", status=503, headers={"Retry-After": "1"},
             times=1)
    code, report, _, _ = timed_check("acme/tiny")
    assert code == 0, report
    first, second = hub.requests(r"GET /acme/tiny/resolve/.*model.safetensors")[:2]
    assert second["t"] - first["t"] >= 0.9


def test_a_hub_operation_outside_a_check_has_its_own_deadline(hub, monkeypatch):
    """`--base` / `--reference` models are resolved outside `check`: still bounded."""
    import pytest

    from hfguard.hub.resolve import HubError, resolve

    monkeypatch.setenv("HFGUARD_HUB_DEADLINE", "1")
    hub.add_repo("acme/tiny", FILES)
    hub.fail(r"GET /api/models/acme/tiny$", trickle=0.2, times=-1)
    start = time.monotonic()
    with pytest.raises(HubError) as err:
        resolve("acme/tiny")
    assert err.value.rule == "hub/timeout" and time.monotonic() - start < 8


def test_a_trickling_full_download_is_cut(hub):
    hub.add_repo("acme/tiny", FILES)
    hub.fail(r"GET /acme/tiny/resolve/.*model.safetensors", trickle=0.2, times=-1)
    code, report, err, took = timed_check("acme/tiny", "--download", "--deadline", "2")
    assert code == 2 and report["verdict"] == "ERROR"
    hits = [f for f in report["findings"] if f["file"] == "model.safetensors" and f["error"]]
    assert hits and {f["rule"] for f in hits} <= {"hub/timeout", "hub/download-failed"}, hits
    assert took < 10


def test_a_check_inside_a_check_shares_the_outer_deadline(hub):
    """Lineage vets each base model with its own check_repo: a hanging base cannot outlive the
    deadline of the check that asked for it."""
    hub.add_repo("acme/base", FILES)
    sha = hub.add_repo("acme/finetune", FILES, card={"base_model": "acme/base"})
    hub.fail(r"/acme/base", delay=60, times=-1)
    code, report, _, took = timed_check(f"acme/finetune@{sha}", "--deadline", "2")
    assert "lineage/base-unavailable" in rules(report), report
    assert took < 10   # the base's own default deadline would be 60 s


def test_the_default_deadline_grows_with_what_a_weights_check_downloads(hub, monkeypatch):
    """Every read of the weights file waits 1.2 s, so the check outlasts a 1 s deadline. A
    weights-tier check downloads the file and its default deadline grows by its size at the slow
    link rate: PASS. A deadline the user chose does not grow, nor the static tier's (range reads)."""
    from hfguard.hub import http

    monkeypatch.setattr(http, "DEFAULT_DEADLINE", 1.0)
    monkeypatch.setattr(http, "SLOW_LINK_RATE", 200.0)   # bytes/s: ~40 s for this ~8 KB repo
    rng = np.random.default_rng(0)
    weights = st_bytes({"w": rng.standard_normal((32, 48), dtype=np.float32)})
    hub.add_repo("acme/slow", {"model.safetensors": weights, "config.json": b'{"model_type": "bert"}'})
    hub.fail(r"GET /acme/slow/resolve/.*model\.safetensors", delay=1.2, times=-1)
    code, report, err, took = timed_check("acme/slow", "--no-cache", "--tier", "weights")
    assert code == 0 and report["verdict"] == "PASS", (rules(report), err)
    assert "Hub deadline now" in err and "the 2 files of acme/slow" in err and took > 2.0
    hub.add_repo("acme/slow-base", {"model.safetensors": weights, "config.json": b'{"model_type": "bert"}'})
    code, report, err, _ = timed_check("acme/slow", "--no-cache", "--tier", "weights",
                                       "--base", "acme/slow-base")
    assert report["verdict"] == "PASS", (rules(report), err)
    assert "the base acme/slow-base" in err   # the base's shards are downloaded too
    code, report, _, _ = timed_check("acme/slow", "--no-cache", "--tier", "weights", "--deadline", "1")
    assert report["verdict"] == "ERROR" and {"hub/timeout", "hub/read-failed"} & rules(report), rules(report)
    code, report, _, _ = timed_check("acme/slow", "--no-cache")
    assert report["verdict"] == "ERROR" and {"hub/timeout", "hub/read-failed"} & rules(report), rules(report)
