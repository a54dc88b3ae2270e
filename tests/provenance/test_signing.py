"""OpenSSF model signatures, made with the real `model_signing` and checked by `static.signature`
through the CLI: signed, tampered (a file, the signature, the signer) and unsigned models."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("model_signing")

from hfguard.cli import main  # noqa: E402
from testing import signing  # noqa: E402
from testing.fakehub.builders import safetensors_bytes  # noqa: E402


def _model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return folder


def _policy(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "hfguard.toml"
    p.write_text(body)
    return p


def scan(model: Path, policy: Path | None = None) -> tuple[int, dict]:
    args = ["scan", str(model), "--format", "json", "-q"] + (["--policy", str(policy)] if policy else [])
    result = CliRunner().invoke(main, args)
    return result.exit_code, json.loads(result.output)


def rules(doc: dict) -> dict[str, str]:
    return {f["rule"]: f["severity"] for fr in doc["files"] for f in fr["findings"]} | {
        f["rule"]: f["severity"] for f in doc.get("findings", [])}


@pytest.fixture
def keys(tmp_path):
    return {name: signing.write_key_pair(tmp_path / "keys", name) for name in ("acme", "mallory")}


def test_signed_model_with_a_trusted_key_passes(tmp_path, keys):
    model = _model(tmp_path / "m")
    signing.sign_with_key(model, keys["acme"][0])
    policy = _policy(tmp_path, f'trusted-signers = [{{ key = "{keys["acme"][1]}" }}]\n'
                     'require-signature = true\n')
    code, doc = scan(model, policy)
    assert code == 0, doc
    assert doc["verdict"] == "PASS" and rules(doc)["signature/verified"] == "info"


def test_tampered_file_is_blocked(tmp_path, keys):
    model = _model(tmp_path / "m")
    signing.sign_with_key(model, keys["acme"][0])
    (model / "config.json").write_text('{"model_type": "bert", "auto_map": {}}')
    policy = _policy(tmp_path, f'trusted-signers = [{{ key = "{keys["acme"][1]}" }}]\n')
    code, doc = scan(model, policy)
    assert code == 1 and doc["verdict"] == "BLOCK"
    assert rules(doc)["signature/file-mismatch"] == "critical"
    assert "signature/verified" in rules(doc)   # the signature itself is intact: it is the file that lies


def test_tampered_signature_is_blocked(tmp_path, keys):
    model = _model(tmp_path / "m")
    sig = signing.sign_with_key(model, keys["acme"][0])
    bundle = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(bundle["dsseEnvelope"]["signatures"][0]["sig"]))
    raw[-1] ^= 1
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(bundle))
    policy = _policy(tmp_path, f'trusted-signers = [{{ key = "{keys["acme"][1]}" }}]\n')
    code, doc = scan(model, policy)
    assert doc["verdict"] == "BLOCK" and rules(doc)["signature/invalid"] == "critical"
    assert "signature/file-mismatch" not in rules(doc)


def test_another_signer_is_blocked_when_signers_are_pinned(tmp_path, keys):
    model = _model(tmp_path / "m")
    signing.sign_with_key(model, keys["mallory"][0])   # a valid signature, by the wrong key
    policy = _policy(tmp_path, f'trusted-signers = [{{ key = "{keys["acme"][1]}" }}]\n')
    code, doc = scan(model, policy)
    assert doc["verdict"] == "BLOCK" and "signature/invalid" in rules(doc)


def test_an_added_file_the_signature_does_not_cover_is_blocked(tmp_path, keys):
    model = _model(tmp_path / "m")
    signing.sign_with_key(model, keys["acme"][0])
    (model / "modeling_evil.py").write_text("x = 1\n")
    policy = _policy(tmp_path, f'trusted-signers = [{{ key = "{keys["acme"][1]}" }}]\n')
    code, doc = scan(model, policy)
    assert doc["verdict"] == "BLOCK" and rules(doc)["signature/unsigned-file"] == "high"


def test_unsigned_model_is_reported_only_when_the_policy_requires_signatures(tmp_path):
    model = _model(tmp_path / "m")
    code, doc = scan(model)
    assert code == 0 and not any(r.startswith("signature/") for r in rules(doc))
    code, doc = scan(model, _policy(tmp_path, "require-signature = true\n"))
    assert doc["verdict"] == "BLOCK" and rules(doc)["signature/missing"] == "high"


def test_signature_without_trusted_signers_is_reported_not_trusted(tmp_path, keys):
    model = _model(tmp_path / "m")
    signing.sign_with_key(model, keys["acme"][0])
    code, doc = scan(model)
    assert code == 0 and rules(doc)["signature/untrusted-signer"] == "info"


def test_certificate_chain_to_a_trusted_root(tmp_path):
    model = _model(tmp_path / "m")
    acme, other = signing.write_pki(tmp_path / "pki", "acme"), signing.write_pki(tmp_path / "pki", "other")
    signing.sign_with_certificate(model, acme)
    trusted = _policy(tmp_path, f'trusted-signers = [{{ certificate = "{acme["root"]}" }}]\n')
    code, doc = scan(model, trusted)
    assert doc["verdict"] == "PASS" and "signature/verified" in rules(doc)
    untrusted = tmp_path / "other.toml"
    untrusted.write_text(f'trusted-signers = [{{ certificate = "{other["root"]}" }}]\n')
    code, doc = scan(model, untrusted)
    assert doc["verdict"] == "BLOCK" and rules(doc)["signature/untrusted-signer"] == "high"


def test_garbage_bundle_is_a_finding(tmp_path):
    model = _model(tmp_path / "m")
    (model / "model.sig").write_text('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}')
    code, doc = scan(model)
    assert doc["verdict"] == "BLOCK" and rules(doc)["signature/malformed"] == "high"


def test_unknown_signer_entry_is_a_usage_error(tmp_path):
    policy = _policy(tmp_path, 'trusted-signers = [{ fingerprint = "abc" }]\n')
    result = CliRunner().invoke(main, ["scan", str(_model(tmp_path / "m")), "--policy", str(policy)])
    assert result.exit_code == 2 and "trusted-signers" in result.output


def test_hashing_a_large_signed_file_stops_at_the_scan_budget(tmp_path, keys):
    model = _model(tmp_path / "m")
    (model / "config.json").unlink()   # the signed model is one 8 MiB file
    (model / "model.safetensors").write_bytes(safetensors_bytes(2 << 20))
    signing.sign_with_key(model, keys["acme"][0])
    policy = _policy(tmp_path, f'trusted-signers = [{{ key = "{keys["acme"][1]}" }}]\n')
    result = CliRunner().invoke(main, ["scan", str(model), "--format", "json", "-q", "--policy", str(policy),
                                       "--budget", "0"])
    doc = json.loads(result.output)
    [timeout] = [f for f in doc["findings"] if f["check"] == "static.signature"]
    assert timeout["rule"] == "check/timeout" and "model.safetensors" in timeout["message"], timeout
    assert doc["verdict"] == "ERROR" and result.exit_code == 2
    # with the usual budget the same model verifies: the stop above is the budget, not the file
    code, doc = scan(model, policy)
    assert code == 0 and rules(doc)["signature/verified"] == "info", doc
