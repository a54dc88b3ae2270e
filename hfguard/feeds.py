"""Signed updates of the known-bad feed (`signatures/known_bad.yaml`).

A feed bundle is a DSSE envelope (JSON) whose payload is a known-bad document — the shipped
file's shape: `repos` (id, reason, source) and `files` (sha256, reason, source, optional name).
`hfguard signatures update BUNDLE` verifies it offline against trusted public keys (`--key`, or the
policy's `trusted-signers`) and merges its entries into the user's feed
(`$HFGUARD_FEED_DIR`, default `<hfguard cache>/feeds/known_bad.yaml`), which the provenance
check reads beside the shipped file. The feed is part of `signatures_version()`, so cached verdicts
and lock entries made before an update are stale after it. `hfguard signatures sign` makes a bundle
with a private key, for teams that publish their own feed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

PAYLOAD_TYPE = "application/vnd.hfguard.known-bad+json"
MAX_BUNDLE_BYTES = 8 << 20
FEED_FILE = "known_bad.yaml"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class FeedError(ValueError):
    """A bundle that does not verify, or entries that are not a known-bad feed."""


def feed_dir() -> Path:
    if os.environ.get("HFGUARD_FEED_DIR"):
        return Path(os.environ["HFGUARD_FEED_DIR"])
    from hfguard.paths import cache_dir

    return cache_dir() / "feeds"


def feed_files() -> list[Path]:
    path = feed_dir() / FEED_FILE
    return [path] if path.is_file() else []


def load_feed() -> dict[str, Any]:
    """The user's installed feed ({} when none). A feed that cannot be read is an error, not an
    empty list: known-bad entries must not vanish silently."""
    files = feed_files()
    if not files:
        return {}
    import yaml  # only when a feed is installed: a scan without one never imports yaml

    try:
        doc = yaml.safe_load(files[0].read_text(encoding="utf-8"))
        validate(doc)
    except (OSError, yaml.YAMLError, FeedError) as exc:
        raise FeedError(f"installed feed {files[0]} is unreadable: {exc}") from None
    return doc


def validate(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise FeedError("a feed is a mapping with repos and/or files")
    for e in doc.get("repos", []) or []:
        if not isinstance(e, dict) or not _REPO.match(str(e.get("id", ""))) or not e.get("reason") \
                or not e.get("source"):
            raise FeedError(f"repo entry {e!r}: needs id (org/name), reason and source")
    for e in doc.get("files", []) or []:
        if not isinstance(e, dict) or not _SHA256.match(str(e.get("sha256", "")).lower()) \
                or not e.get("reason") or not e.get("source"):
            raise FeedError(f"file entry {e!r}: needs sha256 (64 hex), reason and source")
        size = e.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise FeedError(f"file entry {e!r}: size is the file's length in bytes (an integer >= 0)")


def sign(doc: dict[str, Any], private_key_pem: bytes) -> dict[str, Any]:
    """A DSSE envelope over the feed document, signed with an EC or Ed25519 private key."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from hfguard.dsse import dsse_pae

    validate(doc)
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    payload = json.dumps(doc, sort_keys=True).encode()
    data = dsse_pae(PAYLOAD_TYPE, payload)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(data, ec.ECDSA(hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()))
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        sig = key.sign(data)
    else:
        raise FeedError("feed signing keys are EC (P-256/P-384) or Ed25519")
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"sig": base64.b64encode(sig).decode()}]}


def verify(bundle: bytes, public_keys_pem: list[bytes]) -> tuple[dict[str, Any], str]:
    """The feed document of a bundle and the fingerprint of the key that signed it."""
    from cryptography.hazmat.primitives import serialization

    from hfguard.dsse import dsse_pae, key_fingerprint, verify_with_key

    if not public_keys_pem:
        raise FeedError("no trusted key to verify the feed with (--key, or trusted-signers in the policy)")
    if len(bundle) > MAX_BUNDLE_BYTES:
        raise FeedError(f"bundle larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        env = json.loads(bundle)
        if env.get("payloadType") != PAYLOAD_TYPE:
            raise FeedError(f"payloadType is {env.get('payloadType')!r}, not {PAYLOAD_TYPE}")
        payload = base64.b64decode(env["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise FeedError(f"not a feed bundle: {exc}") from None
    data = dsse_pae(PAYLOAD_TYPE, payload)
    for pem in public_keys_pem:
        key = serialization.load_pem_public_key(pem)
        if any(verify_with_key(key, s, data) for s in sigs):
            try:
                doc = json.loads(payload)
            except ValueError as exc:
                raise FeedError(f"signed payload is not JSON: {exc}") from None
            validate(doc)
            return doc, key_fingerprint(key)
    raise FeedError("the bundle's signature verifies under none of the trusted keys: not installed")


def install(doc: dict[str, Any], signer: str) -> dict[str, int]:
    """Merge a verified feed into the installed one (by repo id / sha256; newer entries win)."""
    folder = feed_dir()
    folder.mkdir(parents=True, exist_ok=True)
    current = load_feed()
    repos = {e["id"].lower(): e for e in current.get("repos", []) or []}
    files = {e["sha256"].lower(): e for e in current.get("files", []) or []}
    added = {"repos": 0, "files": 0}
    for e in doc.get("repos", []) or []:
        added["repos"] += e["id"].lower() not in repos
        repos[e["id"].lower()] = {**e, "signed_by": signer}
    for e in doc.get("files", []) or []:
        added["files"] += e["sha256"].lower() not in files
        files[e["sha256"].lower()] = {**e, "sha256": e["sha256"].lower(), "signed_by": signer}
    history = list(current.get("updates", []) or [])
    history.append({"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "signer": signer,
                    "repos": len(doc.get("repos", []) or []), "files": len(doc.get("files", []) or [])})
    out = {"version": 1, "updates": history, "repos": sorted(repos.values(), key=lambda e: e["id"].lower()),
           "files": sorted(files.values(), key=lambda e: e["sha256"])}
    tmp = folder / (FEED_FILE + ".tmp")
    import yaml

    tmp.write_text(yaml.safe_dump(out, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(folder / FEED_FILE)
    return added
