"""DSSE envelopes (the signature format of Sigstore bundles and OpenSSF model signatures): the
bytes a signature covers, and checking one against a public key. Low level: `cryptography` is
imported only when a signature is checked."""

from __future__ import annotations

import hashlib
from typing import Any


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: the bytes a DSSE signature covers."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def verify_with_key(public_key: Any, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            algo = hashes.SHA384() if public_key.curve.key_size >= 384 else hashes.SHA256()
            public_key.verify(signature, data, ec.ECDSA(algo))
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def key_fingerprint(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]
