"""Keys, certificates and OpenSSF model signatures made in tests with the real `model_signing`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def write_key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """An EC P-256 key pair as PEM files: (private, public)."""
    key = ec.generate_private_key(ec.SECP256R1())
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_pki(folder: Path, org: str) -> dict[str, Path]:
    """A root CA and a code-signing leaf issued by it: PEM paths root, leaf, leaf_key."""
    folder.mkdir(parents=True, exist_ok=True)
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _cert(f"{org} root", root_key, f"{org} root", root_key, ca=True)
    leaf = _cert(f"{org} model signer", leaf_key, f"{org} root", root_key, ca=False)
    paths = {"root": folder / f"{org}-root.pem", "leaf": folder / f"{org}-leaf.pem",
             "leaf_key": folder / f"{org}-leaf.key"}
    paths["root"].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths["leaf"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths["leaf_key"].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return paths


def _ignoring_signature(sig: Path):
    import model_signing

    return model_signing.hashing.Config().set_ignored_paths(paths=[sig.name], ignore_git_paths=True)


def sign_with_key(model: Path, private_key: Path, sig_name: str = "model.sig") -> Path:
    import model_signing

    sig = model / sig_name
    (model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
     .set_hashing_config(_ignoring_signature(sig)).sign(model, sig))
    return sig


def sign_with_certificate(model: Path, pki: dict[str, Path], sig_name: str = "model.sig") -> Path:
    import model_signing

    sig = model / sig_name
    (model_signing.signing.Config()
     .use_certificate_signer(private_key=pki["leaf_key"], signing_certificate=pki["leaf"],
                             certificate_chain=[pki["root"]])
     .set_hashing_config(_ignoring_signature(sig)).sign(model, sig))
    return sig
