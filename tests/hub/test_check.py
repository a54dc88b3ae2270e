"""`hfguard check` against the fake Hub with the real huggingface_hub client (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

from testing.fakehub.builders import os_system_pickle, safetensors_bytes, torch_zip_bytes
from testing.fakehub.server import Blob
from tests.hub.conftest import rules, run_check

CARD = {"base_model": "google-bert/bert-base-uncased", "library_name": "transformers", "license": "mit"}
README = (b"---\nbase_model: google-bert/bert-base-uncased\nlibrary_name: transformers\n"
          b"license: mit\n---\n# m\n")


def benign_files(n_floats: int = 1 << 21) -> dict[str, bytes]:
    return {"model.safetensors": safetensors_bytes(n_floats), "config.json": b'{"model_type": "bert"}',
            "README.md": README}


def test_benign_repo_passes_reading_only_headers(hub):
    files = benign_files()
    sha = hub.add_repo("acme/tiny-bert", files, card=CARD)
    code, report, err = run_check("acme/tiny-bert")
    assert code == 0 and report["verdict"] == "PASS", report
    assert report["revision"] == sha and report["source"] == "hub" and report["target"] == "acme/tiny-bert"
    size = len(files["model.safetensors"])
    fetched = hub.bytes_sent("/resolve/.*model.safetensors")
    assert 0 < fetched < size / 50, (fetched, size)
    assert report["stats"]["bytes_transferred"] < size / 20
    assert report["stats"]["repo_bytes"] == sum(len(b) for b in files.values())
    # every read after resolution names the commit, never the branch
    reads = hub.requests("/resolve/|/tree/")
    assert reads and all(sha in r["path"] for r in reads)
    assert all(r["range"] for r in hub.requests("GET .*/resolve/"))
    assert "resolving" in err


def test_card_and_hub_facts_reach_the_target(hub):
    from hfguard.hub.resolve import resolve

    sha = hub.add_repo("acme/tiny-bert", benign_files(64), card=CARD, tags=("v1.0",))
    resolved = resolve("acme/tiny-bert@v1.0")
    assert resolved.sha == sha and resolved.requested == "v1.0"
    assert resolved.card["base_model"] == "google-bert/bert-base-uncased"
    assert resolved.card["library_name"] == "transformers"
    assert resolved.meta["security_repo_status"] == {"scansDone": True, "filesWithIssues": []}
    st = next(f for f in resolved.files if f.path == "model.safetensors")
    assert st.lfs_sha256 and len(st.lfs_sha256) == 64
    assert st.size == len(benign_files(64)["model.safetensors"])


def test_malicious_torch_zip_is_never_a_pass_and_never_runs(hub, tmp_path):
    mark = tmp_path / "PWNED"
    payload = os_system_pickle(f"touch {mark}")
    model = torch_zip_bytes(payload, padding=4 << 20)
    hub.add_repo("acme/evil", {"pytorch_model.bin": model, "config.json": b"{}"}, card=CARD)
    code, report, _ = run_check("acme/evil")
    assert report["verdict"] in ("FLAG", "BLOCK") and code == 1
    assert "provenance/pickle-only-weights" in rules(report)
    # the static tier read the zip's central directory and small members, not the 4 MiB tensor
    assert hub.bytes_sent("pytorch_model.bin") < len(model) / 4
    assert not mark.exists()
    if "static.serialization" in {c["id"] for c in report["checks"]}:   # merged from static-pickle
        assert report["verdict"] == "BLOCK" and "pickle/dangerous-global" in rules(report)


def test_safetensors_that_is_a_pickle_blocks_even_when_the_hub_says_safe(hub, tmp_path):
    mark = tmp_path / "PWNED"
    hub.add_repo("acme/liar", {"model.safetensors": os_system_pickle(f"touch {mark}")},
                 security={"scansDone": True, "filesWithIssues": []})
    code, report, _ = run_check("acme/liar")
    assert report["verdict"] == "BLOCK" and code == 1
    assert "provenance/format-mismatch" in rules(report)
    assert not mark.exists()


def test_hub_reported_unsafe_status_is_a_finding(hub):
    files = benign_files(64)
    hub.add_repo("acme/flagged", {**files, "model.safetensors": Blob(
        data=files["model.safetensors"], lfs=True,
        security={"status": "unsafe", "avScan": {"virusFound": False},
                  "pickleImportScan": {"highestSafetyLevel": "dangerous", "imports": []}})},
                 security={"scansDone": True, "filesWithIssues": [{"path": "model.safetensors",
                                                                   "level": "unsafe"}]})
    code, report, _ = run_check("acme/flagged")
    assert report["verdict"] == "BLOCK" and code == 1
    hits = [f for f in report["findings"] if f["rule"] == "provenance/hub-security-status"]
    assert [f["file"] for f in hits] == ["model.safetensors"]


def test_lookalike_repo_name_is_flagged(hub):
    hub.add_repo("EleuterAI/gpt-j-6B", benign_files(64), card=CARD)
    code, report, _ = run_check("EleuterAI/gpt-j-6B")
    [hit] = [f for f in report["findings"] if f["rule"] == "provenance/lookalike-name"]
    assert hit["evidence"]["imitates"] == "EleutherAI/gpt-j-6B"
    assert report["verdict"] == "BLOCK" and code == 1


def test_hash_mismatch_on_full_download_is_an_error(hub):
    from huggingface_hub import try_to_load_from_cache

    from hfguard.target import hf_cache_dir

    data = benign_files(4096)["model.safetensors"]
    forged = Blob(data=data, lfs=True, claimed_sha256="ab" * 32)
    sha = hub.add_repo("acme/tampered", {"model.safetensors": forged, "config.json": b"{}"})
    code, report, err = run_check("acme/tampered", "--download")
    assert code == 2 and report["verdict"] == "ERROR"
    [hit] = [f for f in report["findings"] if f["rule"] == "provenance/hash-mismatch"]
    assert hit["severity"] == "critical" and hit["error"] and hit["file"] == "model.safetensors"
    assert hit["evidence"]["expected_sha256"] == "ab" * 32
    assert "does not match" in err
    # the tampered copy does not stay in the HF cache; the honest config.json does
    cached = try_to_load_from_cache("acme/tampered", "model.safetensors", revision=sha,
                                    cache_dir=hf_cache_dir())
    assert not isinstance(cached, str)
    assert isinstance(try_to_load_from_cache("acme/tampered", "config.json", revision=sha,
                                             cache_dir=hf_cache_dir()), str)


def test_full_download_populates_the_hf_cache_and_verifies(hub):
    from huggingface_hub import try_to_load_from_cache

    from hfguard.target import hf_cache_dir

    files = benign_files(4096)
    sha = hub.add_repo("acme/tiny-bert", files, card=CARD)
    code, report, _ = run_check("acme/tiny-bert", "--download")
    assert code == 0 and report["verdict"] == "PASS"
    assert report["stats"]["downloaded_files"] == 3
    path = try_to_load_from_cache("acme/tiny-bert", "model.safetensors", revision=sha,
                                  cache_dir=hf_cache_dir())
    assert isinstance(path, str) and Path(path).read_bytes() == files["model.safetensors"]


def test_5xx_is_retried_then_succeeds(hub):
    hub.add_repo("acme/tiny-bert", benign_files(64), card=CARD)
    hub.fail(r"GET /api/models/acme/tiny-bert$", status=503, times=2)
    hub.fail(r"GET /acme/tiny-bert/resolve/.*/model.safetensors", status=502, times=1)
    code, report, err = run_check("acme/tiny-bert")
    assert code == 0 and report["verdict"] == "PASS"
    assert len(hub.requests(r"GET /api/models/acme/tiny-bert$")) == 3
    assert len(hub.requests(r"GET /acme/tiny-bert/resolve/.*/model.safetensors")) == 2
    assert "retrying" in err


def test_persistent_5xx_is_an_error(hub):
    hub.add_repo("acme/tiny-bert", benign_files(64))
    hub.fail(r"GET /api/models/acme/tiny-bert$", status=503, times=-1)
    code, report, err = run_check("acme/tiny-bert")
    assert code == 2 and report["verdict"] == "ERROR"
    assert {f["rule"] for f in report["findings"]} == {"hub/server-error"}
    assert "503" in err
    assert len(hub.requests(r"GET /api/models/acme/tiny-bert$")) == 3  # bounded


def test_persistent_5xx_on_file_reads_is_an_error(hub):
    hub.add_repo("acme/tiny-bert", benign_files(64))
    hub.fail(r"GET /acme/tiny-bert/resolve/.*/model.safetensors", status=500, times=-1)
    code, report, _ = run_check("acme/tiny-bert")
    assert code == 2 and report["verdict"] == "ERROR"
    [fr] = [f for f in report["files"] if f["path"] == "model.safetensors"]
    assert fr["verdict"] == "ERROR" and "HTTP 500" in fr["findings"][0]["message"]


def test_gated_repo_without_token_is_an_error_with_a_clear_message(hub, monkeypatch):
    hub.add_repo("acme/gated", benign_files(64), gated="manual")
    code, report, err = run_check("acme/gated")
    assert code == 2 and report["verdict"] == "ERROR"
    assert "accept the terms" in err and "HF_TOKEN" in err
    assert all(r["status"] == 401 for r in hub.requests("GET /acme/gated/resolve/"))
    # a wrong token is 403, the right one passes
    code, report, err = run_check("acme/gated", "--token", "hf_wrong", "--no-cache")
    assert code == 2 and "HTTP 403" in err
    monkeypatch.setenv("HF_TOKEN", "hf_good_token")
    code, report, _ = run_check("acme/gated", "--no-cache")
    assert code == 0 and report["verdict"] == "PASS"
    assert all(r["auth"] == "Bearer hf_good_token" for r in hub.requests("GET /acme/gated/resolve/")[-3:])


def test_private_or_missing_repo_and_missing_revision_are_errors(hub):
    hub.add_repo("acme/secret", benign_files(64), private=True)
    code, report, err = run_check("acme/secret")
    assert code == 2 and report["findings"][0]["rule"] == "hub/repo-not-found" and "HF_TOKEN" in err
    code, report, err = run_check("acme/nothing-here")
    assert code == 2 and "repository not found" in err
    hub.add_repo("acme/tiny-bert", benign_files(64))
    code, report, err = run_check("acme/tiny-bert@no-such-branch")
    assert code == 2 and report["findings"][0]["rule"] == "hub/revision-not-found"
    assert "no-such-branch" in err


def test_truncated_body_is_an_error_never_a_pass(hub):
    hub.add_repo("acme/tiny-bert", benign_files())
    hub.fail(r"GET /acme/tiny-bert/resolve/.*/model.safetensors", truncate=True, times=-1)
    code, report, _ = run_check("acme/tiny-bert")
    assert code == 2 and report["verdict"] == "ERROR"


def test_server_ignoring_range_on_a_big_file_is_not_downloaded_whole(hub):
    big = safetensors_bytes(5 << 20)  # 20 MiB, above the whole-body limit
    hub.add_repo("acme/big", {"model.safetensors": big, "config.json": b"{}"})
    hub.fail(r"GET /acme/big/resolve/", ignore_range=True, times=-1)
    code, report, err = run_check("acme/big")
    assert code == 2 and report["verdict"] == "ERROR"
    assert "ignored the Range header" in err
    assert report["stats"]["bytes_transferred"] < 4 << 20
    # small files are simply read whole
    [cfg] = [f for f in report["files"] if f["path"] == "config.json"]
    assert cfg["verdict"] == "PASS"


def test_slow_hub_times_out_as_an_error(hub, monkeypatch):
    monkeypatch.setenv("HFGUARD_HUB_TIMEOUT", "0.3")
    monkeypatch.setenv("HFGUARD_HUB_RETRIES", "2")
    hub.add_repo("acme/tiny-bert", benign_files(64))
    hub.fail(r"GET /api/models/acme/tiny-bert$", delay=1.0, times=-1)
    code, report, err = run_check("acme/tiny-bert")
    assert code == 2 and report["findings"][0]["rule"] == "hub/timeout"


def test_lfs_redirects_and_tree_pagination(hub):
    hub.lfs_redirect = True
    hub.page_size = 2
    files = {**benign_files(64), "sub/a.json": b"{}", "sub/b.json": b"[]", "tokenizer.json": b"{}"}
    hub.add_repo("acme/tiny-bert", files)
    code, report, _ = run_check("acme/tiny-bert")
    assert code == 0, report
    assert sorted(f["path"] for f in report["files"]) == sorted(files)
    assert hub.requests("GET /lfs-blobs/") and len(hub.requests("/tree/")) >= 3


def test_verdict_cache_hit_costs_only_the_listing_for_a_pinned_sha(hub):
    sha = hub.add_repo("acme/tiny-bert", benign_files(64), card=CARD)
    code, first, _ = run_check(f"acme/tiny-bert@{sha}")
    assert code == 0 and first["stats"]["cached"] is False
    mid = len(hub.log)
    code, second, err = run_check(f"acme/tiny-bert@{sha}")
    assert code == 0 and second["stats"]["cached"] is True and second["verdict"] == "PASS"
    assert second["revision"] == sha and "cached verdict" in err
    # the key names the files' content hashes: the listing is read, no metadata, no file reads
    assert [r["path"] for r in hub.log[mid:]] == [f"/api/models/acme/tiny-bert/tree/{sha}"]
    # a branch also needs its sha: one metadata request and the listing, no file reads
    run_check("acme/tiny-bert")
    mid = len(hub.log)
    code, third, _ = run_check("acme/tiny-bert")
    assert third["stats"]["cached"] is True
    assert [r["path"] for r in hub.log[mid:]] == ["/api/models/acme/tiny-bert",
                                                  f"/api/models/acme/tiny-bert/tree/{sha}"]
    # --no-cache reads again
    code, fourth, _ = run_check(f"acme/tiny-bert@{sha}", "--no-cache")
    assert fourth["stats"]["cached"] is False and len(hub.requests("/resolve/")) > 0


def test_cache_key_follows_policy_and_errors_are_never_cached(hub, tmp_path):
    sha = hub.add_repo("acme/tiny-bert", benign_files(64))
    run_check(f"acme/tiny-bert@{sha}")
    policy = tmp_path / "hfguard.toml"
    policy.write_text('flag-at = "low"\n')
    code, report, _ = run_check(f"acme/tiny-bert@{sha}", "--policy", str(policy))
    assert report["stats"]["cached"] is False
    # options that change the evidence (a base to diff against) are part of the key too
    code, report, _ = run_check(f"acme/tiny-bert@{sha}", "--base", str(tmp_path))
    assert report["stats"]["cached"] is False
    code, report, _ = run_check(f"acme/tiny-bert@{sha}", "--base", str(tmp_path))
    assert report["stats"]["cached"] is True
    # where numbers are computed is not part of the key; probe data is, by content
    code, report, _ = run_check(f"acme/tiny-bert@{sha}", "--base", str(tmp_path), "--device", "cpu")
    assert report["stats"]["cached"] is True
    probe = tmp_path / "probe.txt"
    probe.write_text("canary one\n")
    assert run_check(f"acme/tiny-bert@{sha}", "--probe-data", str(probe))[1]["stats"]["cached"] is False
    assert run_check(f"acme/tiny-bert@{sha}", "--probe-data", str(probe))[1]["stats"]["cached"] is True
    probe.write_text("canary two\n")
    assert run_check(f"acme/tiny-bert@{sha}", "--probe-data", str(probe))[1]["stats"]["cached"] is False
    hub.add_repo("acme/down", benign_files(64))
    hub.fail(r"GET /acme/down/resolve/.*model.safetensors", status=500, times=2)
    hub.fail(r"GET /acme/down/resolve/.*model.safetensors", status=500, times=1)
    code, report, _ = run_check("acme/down")
    assert code == 2
    code, report, _ = run_check("acme/down")
    assert code == 0 and report["stats"]["cached"] is False


def test_offline_mode_uses_the_local_cache_only(hub, monkeypatch):
    sha = hub.add_repo("acme/tiny-bert", benign_files(64), card=CARD)
    code, _, _ = run_check("acme/tiny-bert", "--download", "--no-cache")
    assert code == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.log)
    code, report, err = run_check("acme/tiny-bert", "--no-cache")
    assert code == 0 and report["verdict"] == "PASS" and report["revision"] == sha, (err, report)
    assert report["stats"]["offline"] is True
    assert sorted(f["path"] for f in report["files"]) == sorted(benign_files(64))
    assert len(hub.log) == n  # not one request
    code, report, err = run_check("acme/never-downloaded")
    assert code == 2 and "not in the local Hugging Face cache" in err


def test_json_report_is_parseable_and_counts_bytes(hub):
    hub.add_repo("acme/tiny-bert", benign_files(1 << 16))
    code, report, _ = run_check("acme/tiny-bert")
    json.dumps(report)
    assert report["stats"]["requests"] >= 1 and report["stats"]["bytes_transferred"] > 0


def test_offline_download_verifies_the_cached_bytes(hub, monkeypatch):
    from hfguard.target import hf_cache_dir

    sha = hub.add_repo("acme/tiny-bert", benign_files(4096), card=CARD)
    assert run_check("acme/tiny-bert", "--download", "--no-cache")[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_check("acme/tiny-bert", "--download", "--no-cache")[0] == 0
    snapshot = hf_cache_dir() / "models--acme--tiny-bert" / "snapshots" / sha
    blob = (snapshot / "model.safetensors").resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x01")   # tampered after download
    code, report, _ = run_check("acme/tiny-bert", "--download", "--no-cache")
    assert code == 2 and "provenance/hash-mismatch" in rules(report)
    # the tampered blob and its snapshot link are gone from the cache: nothing loads them later
    assert not blob.exists() and not (snapshot / "model.safetensors").is_symlink()
    # a plain file in place of the blob link: nothing vouches for its bytes, so it is not passed
    (snapshot / "model.safetensors").write_bytes(benign_files(4096)["model.safetensors"])
    code, report, _ = run_check("acme/tiny-bert", "--download", "--no-cache")
    assert code == 2 and "hub/unverifiable-cached-file" in rules(report)


def test_a_hanging_listing_is_cut_by_a_timeout_and_retried(hub, monkeypatch):
    monkeypatch.setenv("HFGUARD_HUB_TIMEOUT", "0.5")
    hub.add_repo("acme/tiny-bert", benign_files(64))
    hub.fail(r"GET /api/models/acme/tiny-bert/tree/", delay=30, times=1)
    code, report, _ = run_check("acme/tiny-bert")
    assert code == 0 and report["verdict"] == "PASS"
    assert len(hub.requests(r"GET /api/models/acme/tiny-bert/tree/")) == 2


def test_truncated_full_download_is_an_error(hub):
    hub.add_repo("acme/tiny-bert", benign_files(1 << 16))
    hub.fail(r"GET /acme/tiny-bert/resolve/.*/model.safetensors", truncate=True, times=-1)
    code, report, err = run_check("acme/tiny-bert", "--download")
    assert code == 2 and report["verdict"] == "ERROR"
    [fr] = [f for f in report["files"] if f["path"] == "model.safetensors"]
    assert fr["verdict"] == "ERROR"
    assert any(f["file"] == "model.safetensors" and f["error"] for f in report["findings"])


def test_hook_context_flags_an_unpinned_reference_and_keys_the_cache(hub):
    from hfguard.hub.check import check_repo
    from hfguard.policy import Policy

    sha = hub.add_repo("acme/tiny-bert", benign_files(64), card=CARD)
    hooked = check_repo("acme/tiny-bert", Policy(), options={"context": "hook"})
    [f] = [f for f in hooked.findings if f.rule == "provenance/unpinned-revision"]
    assert sha in f.remediation and hooked.stats["cached"] is False
    plain = check_repo("acme/tiny-bert", Policy())
    assert plain.stats["cached"] is False   # another context, another cache entry
    assert "provenance/unpinned-revision" not in {f.rule for f in plain.findings}
    pinned = check_repo(f"acme/tiny-bert@{sha}", Policy(), options={"context": "hook"})
    assert "provenance/unpinned-revision" not in {f.rule for f in pinned.findings}


def test_a_hub_that_keeps_answering_429_is_rate_limited_not_a_pass(hub, monkeypatch):
    monkeypatch.setenv("HFGUARD_HUB_RETRIES", "2")
    hub.add_repo("acme/busy", benign_files(64), card=CARD)
    hub.fail("/api/models/acme/busy", status=429, times=-1, headers={"Retry-After": "0"})
    code, report, err = run_check("acme/busy")
    assert code == 2 and report["verdict"] == "ERROR"
    assert "hub/rate-limited" in rules(report) and "429" in err
