"""Quality Integrity Certificates: hashes and scores, signed by the ledger's Ed25519 key.

The certificate body is canonicalised with RFC 8785 (JSON Canonicalization Scheme) and signed
with the ledger's checkpoint signing key (``models.ledger.signing``), over a context prefix so a
certificate signature can never be mistaken for a checkpoint signature. The signature carries
the key id, verifier key and public key. Verification checks the signature, that the key is in
the ledger keyring (the current key or one retired by ``execflow audit rotate-key``; a
certificate re-signed by any other key fails), and re-hashes the stored bitstream, so a
tampered bitstream, body or key fails.

Certificates issued before this change were signed without the prefix by CompactEdge's own key
(``data_dir/compaction/signing-ed25519.pem``); they still verify while that file exists.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.ledger.checkpoints import keyring, signer
from models.ledger.verify import VerificationError, parse_verifier_key
from models.settings import get_settings

ALGORITHM = "Ed25519"
CONTEXT = b"execflow-quality-certificate/1\n"


def signing_key_path() -> Path:
    """The key certificates are signed with: the ledger signing key file."""
    path = get_settings().ledger_key_path
    assert path is not None
    return path


def legacy_key_path() -> Path:
    """CompactEdge's own key from before certificates moved onto the ledger key."""
    return get_settings().data_dir / "compaction" / "signing-ed25519.pem"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sign(body: dict[str, Any]) -> dict[str, Any]:
    """The certificate: the body plus the signing key's identity and the signature over
    ``CONTEXT || JCS(body)``."""
    key = signer()
    signature = key.private_key.sign(CONTEXT + rfc8785.dumps(body))
    return {
        **body,
        "signature": {
            "algorithm": ALGORITHM,
            "key_id": key.key_id.hex(),
            "verifier_key": key.verifier_key,
            "public_key": _b64(key.public_key),
            "value": _b64(signature),
        },
    }


def _legacy_public_key() -> bytes | None:
    path = legacy_key_path()
    if not path.exists():
        return None
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        return None
    return loaded.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _check_signature(certificate: dict[str, Any]) -> tuple[bool, bool, str | None]:
    """(signature valid, key trusted, key id) of a certificate."""
    body = {k: v for k, v in certificate.items() if k != "signature"}
    sig = certificate.get("signature")
    if not isinstance(sig, dict):
        return False, False, None
    legacy = "key_id" not in sig
    try:
        public = base64.b64decode(str(sig.get("public_key", "")), validate=True)
        message = rfc8785.dumps(body) if legacy else CONTEXT + rfc8785.dumps(body)
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(str(sig.get("value", "")), validate=True), message
        )
    except (InvalidSignature, ValueError, TypeError):
        return False, False, None
    if legacy:
        return True, public == _legacy_public_key(), None
    key_id = str(sig.get("key_id"))
    try:
        _, named = parse_verifier_key(str(sig.get("verifier_key", "")))
    except (VerificationError, ValueError):
        return True, False, key_id
    ring = keyring()
    trusted = (
        named == public
        and public in ring
        and any(ident[1].hex() == key_id and value == public for ident, value in ring.keys.items())
    )
    return True, trusted, key_id


def verify(certificate: dict[str, Any], bitstream: bytes | None) -> dict[str, Any]:
    """Check the signature, that a ledger keyring key made it, and that the stored bitstream
    still hashes to the certified value."""
    signature_valid, key_trusted, key_id = _check_signature(certificate)
    expected = (certificate.get("hashes") or {}).get("bitstream_sha256")
    actual = hashlib.sha256(bitstream).hexdigest() if bitstream is not None else None
    intact = actual is not None and actual == expected
    return {
        "valid": signature_valid and key_trusted and intact,
        "signature_valid": signature_valid,
        "key_trusted": key_trusted,
        "key_id": key_id,
        "bitstream_intact": intact,
        "bitstream_sha256": actual,
    }
