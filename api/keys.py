"""API key material: generation, checksum, hashing. The database holds only the hash.

Format: ``ef_<scope>_<32 random base62 chars><6 base62 chars of CRC32>``. The checksum lets a
mistyped or truncated key be rejected before any database lookup (as GitHub's tokens do); the
scope word is informational only: the scope that counts is the one stored with the hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models.db import utcnow
from models.errors import BadRequest, Conflict, NotFound
from models.keys import PLANS, SCOPES, ApiKey, count_active_admins

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_LEN = 32
CHECKSUM_LEN = 6
KEY_RE = re.compile(rf"^ef_(read|write|admin)_([0-9A-Za-z]{{{RANDOM_LEN + CHECKSUM_LEN}}})$")


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(head: str) -> str:
    return _base62(zlib.crc32(head.encode()), CHECKSUM_LEN)


def generate_key(scope: str) -> str:
    """A new key for ``scope``; returned to the caller once and never stored."""
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LEN))
    head = f"ef_{scope}_{random_part}"
    return head + _checksum(head)


def is_well_formed(key: str) -> bool:
    """True when ``key`` has the ExecFlow shape and its checksum matches."""
    match = KEY_RE.match(key)
    if match is None:
        return False
    head, checksum = key[:-CHECKSUM_LEN], key[-CHECKSUM_LEN:]
    return secrets.compare_digest(_checksum(head), checksum)


def hash_key(key: str) -> str:
    """SHA-256 of the key. Keys carry 190 random bits, so a fast hash cannot be brute-forced."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """What listings show: the scope word and the first four random characters."""
    scope_end = key.index("_", 3) + 1
    return key[: scope_end + 4]


# --- service functions: used by the API router and by ``execflow keys`` ---------------------


async def create_api_key(
    session: AsyncSession,
    *,
    name: str,
    scope: str,
    plan: str = "starter",
    rate_per_minute: int | None = None,
    burst: int | None = None,
    actor: str,
    request_id: str | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key's hash and return (row, the full key). The key is never retrievable again."""
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}", fields=["scope"])
    if plan not in PLANS:
        raise BadRequest(f"plan must be one of {', '.join(PLANS)}", fields=["plan"])
    if plan != "enterprise" and (rate_per_minute is not None or burst is not None):
        raise BadRequest(
            "custom rate_per_minute and burst apply to the enterprise plan only",
            fields=[f for f, v in (("rate_per_minute", rate_per_minute), ("burst", burst)) if v],
        )
    key = generate_key(scope)
    row = ApiKey(
        name=name,
        scope=scope,
        plan=plan,
        rate_per_minute=rate_per_minute if plan == "enterprise" else None,
        burst=burst if plan == "enterprise" else None,
        key_hash=hash_key(key),
        prefix=display_prefix(key),
        last4=key[-4:],
    )
    session.add(row)
    await session.commit()
    await ledger.record(
        "api_key_created",
        actor=actor,
        target=f"key:{row.id}",
        params={"name": name, "scope": scope, "plan": plan, "prefix": row.prefix},
        request_id=request_id,
    )
    return row, key


async def revoke_api_key(
    session: AsyncSession, *, key_id: int, actor: str, request_id: str | None = None
) -> ApiKey:
    """Revoke a key at once. The last active admin key cannot be revoked (it would lock you out)."""
    row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"API key {key_id} not found")
    if row.revoked_at is None:
        if row.scope == "admin" and await count_active_admins(session) <= 1:
            raise Conflict("Refusing to revoke the last active admin key; create another first")
        row.revoked_at = utcnow()
        await session.commit()
        await ledger.record(
            "api_key_revoked",
            actor=actor,
            target=f"key:{row.id}",
            params={"prefix": row.prefix},
            request_id=request_id,
        )
    return row
