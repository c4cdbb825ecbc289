"""Signing secrets and signature headers.

A secret is ``whsec_`` + base64 of 32 random bytes (the Standard Webhooks format). Two
signatures travel with every delivery:

* ``X-FluxCybers-Signature: sha256=<hex HMAC-SHA256(secret string, body)>`` (the reference);
* Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature:
  v1,<base64 HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")>``.

During a rotation's grace period both secrets sign: the FluxCybers header carries
``sha256=<new>,sha256=<old>`` and ``webhook-signature`` carries ``v1,<new> v1,<old>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
SIGNATURE_HEADER = "X-FluxCybers-Signature"


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def fluxcybers_signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>`` over the exact body bytes, keyed by the secret string as shown."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _standard_key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(raw)


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secrets_in_force: list[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every signature header for one attempt; newest secret first."""
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: ",".join(fluxcybers_signature(s, body) for s in secrets_in_force),
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(s, message_id, timestamp, body) for s in secrets_in_force
        ),
    }
