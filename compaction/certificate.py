"""Quality Integrity Certificates: hashes and scores, signed with Ed25519.

The certificate body is canonicalised with RFC 8785 (JSON Canonicalization Scheme) and signed;
the public key travels inside the certificate. Verification checks the signature and re-hashes
the stored bitstream, so a tampered bitstream (or certificate) fails.
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

from models.crypto import write_private_file
from models.settings import get_settings

ALGORITHM = "Ed25519"


def signing_key_path() -> Path:
    """Where CompactEdge's signing key lives (the integrator may point this at the ledger key)."""
    return get_settings().data_dir / "compaction" / "signing-ed25519.pem"


def signing_key() -> Ed25519PrivateKey:
    """Load the Ed25519 signing key, creating it (0600) on first use."""
    path = signing_key_path()
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private_file(path, pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    return loaded


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sign(body: dict[str, Any]) -> dict[str, Any]:
    """The certificate: the body plus algorithm, public key and signature over its JCS form."""
    key = signing_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signature = key.sign(rfc8785.dumps(body))
    return {
        **body,
        "signature": {"algorithm": ALGORITHM, "public_key": _b64(public), "value": _b64(signature)},
    }


def verify(certificate: dict[str, Any], bitstream: bytes | None) -> dict[str, Any]:
    """Check the signature and that the stored bitstream still hashes to the certified value."""
    body = {k: v for k, v in certificate.items() if k != "signature"}
    sig = certificate.get("signature") or {}
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(sig.get("public_key", "")))
        public.verify(base64.b64decode(sig.get("value", "")), rfc8785.dumps(body))
        signature_valid = True
    except (InvalidSignature, ValueError, TypeError):
        signature_valid = False
    expected = (certificate.get("hashes") or {}).get("bitstream_sha256")
    actual = hashlib.sha256(bitstream).hexdigest() if bitstream is not None else None
    intact = actual is not None and actual == expected
    return {
        "valid": signature_valid and intact,
        "signature_valid": signature_valid,
        "bitstream_intact": intact,
        "bitstream_sha256": actual,
    }
