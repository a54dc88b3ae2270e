"""Model signatures (OpenSSF Model Signing, `model_signing`): does a signed manifest vouch for the
files being scanned, and did a signer the policy trusts sign it?

An OMS signature is a Sigstore bundle (JSON, usually `model.sig`) holding a DSSE envelope whose
payload is an in-toto statement listing every file of the model with its digest. Verification
here is offline and needs no model bytes beyond hashes the target already has (a Hub listing's
LFS sha256) or can compute (local files):

1. the bundle is parsed (bounded) and the manifest compared with the target's files: a digest that
   differs, a signed file that is missing, or a model file the manifest does not cover;
2. the DSSE signature is checked against the policy's trusted signers: public keys (EC P-256/384,
   Ed25519), or certificates (a certificate-chain bundle must verify under its own leaf and chain
   up to a trusted certificate). Keyless Sigstore bundles (Fulcio + Rekor) need a trust root and
   the transparency log, which this offline check does not verify: they count as unverified.

Nothing is imported from the model; `cryptography` is needed only when a signature is checked.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hfguard.budget import Budget
from hfguard.checks import Check, ScanContext
from hfguard.dsse import dsse_pae, key_fingerprint, verify_with_key
from hfguard.findings import Finding, Severity
from hfguard.policy import TrustedSigner
from hfguard.target import Target, TargetFile

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle"
MAX_BUNDLE_BYTES = 4 << 20
# paths model_signing leaves out of the manifest by default, plus VCS and Hub bookkeeping
_NEVER_SIGNED = (".git", ".github", ".gitattributes", ".gitignore", ".cache")
_REMEDIATION = ("Do not load these files: what they hold is not what the signer signed. Get the model "
                "again from its publisher and verify the signature before use.")


class BundleError(ValueError):
    """The signature bundle cannot be read as an OMS Sigstore bundle."""


@dataclass(frozen=True)
class Bundle:
    file: str                              # display path of the signature file
    payload: bytes                         # the DSSE payload (in-toto statement)
    payload_type: str
    signatures: tuple[bytes, ...]
    certificates: tuple[bytes, ...]        # DER, leaf first (certificate-chain bundles)
    keyless: bool                          # a Fulcio certificate with transparency-log entries
    manifest: dict[str, tuple[str, str]]   # file name -> (algorithm, hex digest)
    ignore_paths: tuple[str, ...]

    def pae(self) -> bytes:
        return dsse_pae(self.payload_type, self.payload)




def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{what} is not base64") from None


def _der(value: Any) -> bytes:
    raw = _b64(value, "certificate")
    if raw[:1] != b"\x30":   # some writers base64 the DER twice
        raw = _b64(raw.decode("ascii", "replace"), "certificate")
    return raw


def parse_bundle(data: bytes, file: str) -> Bundle:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not str(doc.get("mediaType", "")).startswith(BUNDLE_MEDIA_TYPE):
        raise BundleError("not a Sigstore bundle (mediaType)")
    env = doc.get("dsseEnvelope")
    if not isinstance(env, dict) or not isinstance(env.get("signatures"), list):
        raise BundleError("no DSSE envelope")
    payload = _b64(env.get("payload", ""), "payload")
    sigs = tuple(_b64(s.get("sig", ""), "signature") for s in env["signatures"] if isinstance(s, dict))
    material = doc.get("verificationMaterial") or {}
    certs: list[bytes] = []
    chain = material.get("x509CertificateChain") or {}
    for c in chain.get("certificates", []) if isinstance(chain, dict) else []:
        certs.append(_der(c.get("rawBytes", "")))
    if isinstance(material.get("certificate"), dict):
        certs.insert(0, _der(material["certificate"].get("rawBytes", "")))
    try:
        statement = json.loads(payload)
        predicate = statement["predicate"]
        resources = predicate["resources"]
        serialization = predicate.get("serialization", {})
        manifest = {str(r["name"]): (str(r.get("algorithm", serialization.get("hash_type", ""))),
                                     str(r["digest"]).lower()) for r in resources}
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"payload is not a model_signing statement: {exc!r}") from None
    if serialization.get("method", "files") != "files":
        raise BundleError(f"manifest method {serialization.get('method')!r} (shards) is not supported")
    return Bundle(file=file, payload=payload, payload_type=str(env.get("payloadType", "")),
                  signatures=sigs, certificates=tuple(certs),
                  keyless=bool(material.get("tlogEntries")) and bool(certs),
                  manifest=manifest, ignore_paths=tuple(map(str, serialization.get("ignore_paths", ()))))


def is_bundle(file: TargetFile) -> bool:
    if not file.name.endswith((".sig", ".sigstore", ".sigstore.json")) or file.size > MAX_BUNDLE_BYTES:
        return False
    return BUNDLE_MEDIA_TYPE.encode() in file.head(512)


# -- digests of the target's files ----------------------------------------------------------------
def _relative(sig: TargetFile, file: TargetFile) -> str | None:
    """The file's path relative to the folder the signature sits in (the folder it signs), or None
    when the file lies outside it."""
    base = sig.path.rsplit("/", 1)[0] + "/" if "/" in sig.path else ""
    return file.path[len(base):] if file.path.startswith(base) else None


def _ignored(name: str, patterns: tuple[str, ...]) -> bool:
    parts = name.split("/")
    return any(p in _NEVER_SIGNED or p in patterns for p in parts) or any(
        fnmatch.fnmatch(name, pat) for pat in patterns)


# -- signatures -------------------------------------------------------------------------------------
def _chains_to(leaf: Any, pool: list[Any], trusted: list[Any]) -> Any | None:
    """The trusted certificate the leaf chains up to through `pool`, or None."""
    trusted_der = {t.fingerprint(_sha256()) for t in trusted}
    cert, seen = leaf, 0
    while seen < 8:
        if cert.fingerprint(_sha256()) in trusted_der:
            return cert
        issuer = next((c for c in [*pool, *trusted] if c.subject == cert.issuer and _issued(cert, c)), None)
        if issuer is None or issuer is cert:
            return None
        cert, seen = issuer, seen + 1
    return None


def _issued(cert: Any, issuer: Any) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except Exception:  # noqa: BLE001 - any failure means "not issued by"
        return False
    return True


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


@dataclass(frozen=True)
class SignerCheck:
    status: str          # "trusted", "untrusted" (intact, unknown signer), "invalid", "unverified"
    signer: str
    detail: str = ""


def check_signer(bundle: Bundle, signers: tuple[TrustedSigner, ...]) -> SignerCheck:
    """Who signed, and does the policy trust them."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = bundle.pae()
    keys = [serialization.load_pem_public_key(s.pem) for s in signers if s.kind == "key"]
    roots = [c for s in signers if s.kind == "certificate" for c in x509.load_pem_x509_certificates(s.pem)]
    if bundle.certificates:
        chain = [x509.load_der_x509_certificate(c) for c in bundle.certificates]
        leaf = chain[0]
        subject = leaf.subject.rfc4514_string() or key_fingerprint(leaf.public_key())
        if not any(verify_with_key(leaf.public_key(), s, data) for s in bundle.signatures):
            return SignerCheck("invalid", subject, "the signature does not verify under its own certificate")
        if bundle.keyless:
            return SignerCheck("unverified", subject, "keyless Sigstore signature: the certificate and "
                               "transparency log need Sigstore's trust root, which this offline check does "
                               "not verify")
        anchor = _chains_to(leaf, chain[1:], roots)
        if anchor is None:
            return SignerCheck("untrusted", subject, "the certificate does not chain to a trusted signer")
        return SignerCheck("trusted", subject, f"chains to {anchor.subject.rfc4514_string()}")
    for key in keys:
        if any(verify_with_key(key, s, data) for s in bundle.signatures):
            return SignerCheck("trusted", key_fingerprint(key))
    if not keys:
        return SignerCheck("unverified", "a public key", "no trusted signer key is configured to check it")
    return SignerCheck("invalid", "unknown key", f"the signature verifies under none of the "
                       f"{len(keys)} trusted key(s)")


def _ticker(budget: Budget, path: str) -> Callable[[str], None]:
    return lambda what: budget.tick(f"{what} {path}")


class SignatureCheck(Check):
    id = "static.signature"
    tier = "static"
    version = "1"
    description = "OpenSSF model signatures: manifest vs files, signer vs the policy's trusted signers"

    def check_target(self, target: Target, ctx: ScanContext) -> Iterator[Finding]:
        signing = ctx.policy.signing
        bundles = [f for f in target.files if is_bundle(f)]
        if not bundles:
            if signing.require_signature and target.files:
                yield self.finding("signature/missing", Severity.HIGH,
                                   f"{target.display}: no model signature, and the policy requires one",
                                   remediation="ask the publisher for an OpenSSF model signature "
                                   "(model_signing sign) or drop require-signature for this model")
            return
        for file in bundles:
            yield from self._check_bundle(target, file, ctx)

    def _check_bundle(self, target: Target, file: TargetFile, ctx: ScanContext) -> Iterator[Finding]:
        signing = ctx.policy.signing
        with file.open() as fh:
            raw = fh.read(MAX_BUNDLE_BYTES + 1)
        try:
            bundle = parse_bundle(raw, file.path)
        except BundleError as exc:
            yield self.finding("signature/malformed", Severity.HIGH, f"{file.path}: unreadable signature "
                               f"bundle: {exc}", file=file.path,
                               remediation="a signature that cannot be read vouches for nothing; get a "
                               "valid one from the publisher")
            return
        yield from self._manifest_findings(target, file, bundle, ctx)
        try:
            who = check_signer(bundle, signing.trusted_signers)
        except ImportError:
            yield self.finding("signature/unverifiable", Severity.MEDIUM, f"{file.path}: checking "
                               "signatures needs the `cryptography` package (pip install 'hfguard[signing]')",
                               file=file.path, error=signing.require_signature)
            return
        except ValueError as exc:   # a certificate or key that does not parse
            yield self.finding("signature/malformed", Severity.HIGH, f"{file.path}: {exc}", file=file.path)
            return
        ev = {"signer": who.signer, "manifest_files": len(bundle.manifest)}
        if who.status == "invalid":
            yield self.finding("signature/invalid", Severity.CRITICAL,
                               f"{file.path}: the signature fails: {who.detail}", file=file.path, evidence=ev,
                               remediation=_REMEDIATION)
        elif who.status == "trusted":
            yield self.finding("signature/verified", Severity.INFO,
                               f"{file.path}: signed by trusted signer {who.signer} {who.detail}".rstrip(),
                               file=file.path, evidence=ev)
        else:
            required = signing.require_signature or bool(signing.trusted_signers)
            yield self.finding("signature/untrusted-signer", Severity.HIGH if required else Severity.INFO,
                               f"{file.path}: signed by {who.signer}, not a trusted signer: {who.detail}",
                               file=file.path, evidence=ev,
                               remediation="add the publisher's key or certificate to trusted-signers if "
                               "you trust them; otherwise treat the model as unsigned")

    def _manifest_findings(self, target: Target, sig: TargetFile, bundle: Bundle,
                           ctx: ScanContext) -> Iterator[Finding]:
        files = {name: f for f in target.files if f is not sig and (name := _relative(sig, f)) is not None}
        for name, (algo, digest) in sorted(bundle.manifest.items()):
            f = files.get(name)
            if f is None:
                yield self.finding("signature/file-mismatch", Severity.CRITICAL,
                                   f"{sig.path}: signed file {name!r} is missing", file=sig.path,
                                   location=name, remediation=_REMEDIATION)
                continue
            if algo != "sha256":
                yield self.finding("signature/unverifiable", Severity.MEDIUM,
                                   f"{sig.path}: {name}: digest algorithm {algo!r} is not supported",
                                   file=sig.path, location=name, error=True)
                continue
            # the Hub's LFS sha256 needs no download; a local file is hashed under the scan budget
            # (--budget per file, as every check), so a huge one stops with check/timeout
            actual = f.content_sha256(_ticker(ctx.budget(), f.path))
            if actual != digest:
                yield self.finding("signature/file-mismatch", Severity.CRITICAL,
                                   f"{f.path}: its bytes differ from the signed manifest ({sig.path})",
                                   file=f.path, evidence={"signed_sha256": digest, "sha256": actual},
                                   remediation=_REMEDIATION)
        for name, f in sorted(files.items()):
            if name not in bundle.manifest and not _ignored(name, bundle.ignore_paths):
                yield self.finding("signature/unsigned-file", Severity.HIGH,
                                   f"{f.path}: not covered by the signature {sig.path}; a loader may read it",
                                   file=f.path, remediation="remove files the publisher did not sign, or "
                                   "get a signature that covers them")
