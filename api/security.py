"""Authentication (Bearer API keys), scope checks and rate-limit charging for every route.

Scope comes from the database, never from the key's prefix. ``read`` may GET; ``write`` may also
POST/PUT/PATCH; ``admin`` may do everything, including DELETE and admin-only operations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import update

from api.keys import hash_key, is_well_formed
from api.ratelimit import Decision, MemoryLimiter, RedisLimiter, unlimited
from models import keys as key_repo
from models.db import get_database, utcnow
from models.errors import Forbidden, RateLimited, Unauthorized

SCOPE_RANK = {"read": 0, "write": 1, "admin": 2}
METHOD_SCOPE = {
    "GET": "read",
    "HEAD": "read",
    "OPTIONS": "read",
    "POST": "write",
    "PUT": "write",
    "PATCH": "write",
    "DELETE": "admin",
}
LAST_USED_RESOLUTION_S = 60.0


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: a snapshot of its key row, safe to keep in memory."""

    key_id: int
    name: str
    scope: str
    rate_per_minute: int
    burst: int | None
    last_used_epoch: float

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"

    def allows(self, scope: str) -> bool:
        return SCOPE_RANK[self.scope] >= SCOPE_RANK[scope]


class KeyCache:
    """Verified keys by hash for a few seconds, so a hot key costs no database round trip."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, key_hash: str) -> Principal | None:
        hit = self._entries.get(key_hash)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        if self.ttl > 0:
            self._entries[key_hash] = (time.monotonic() + self.ttl, principal)

    def forget(self, key_id: int) -> None:
        for key_hash, (_, principal) in list(self._entries.items()):
            if principal.key_id == key_id:
                del self._entries[key_hash]


def required_scope(method: str, declared: str | None) -> str:
    return declared or METHOD_SCOPE.get(method.upper(), "admin")


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer ef_...'")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


async def authenticate(request: Request, cache: KeyCache) -> Principal:
    """The caller's principal, or 401 for a missing, malformed, unknown or revoked key."""
    token = bearer_token(request)
    if not is_well_formed(token):
        raise Unauthorized("Malformed API key")
    key_hash = hash_key(token)
    principal = cache.get(key_hash)
    if principal is None:
        async with get_database().session() as session:
            row = await key_repo.get_by_hash(session, key_hash)
            if row is None or row.revoked_at is not None:
                raise Unauthorized("Unknown or revoked API key")
            rate, burst = row.limits()
            last_used = row.last_used_at.timestamp() if row.last_used_at else 0.0
            principal = Principal(row.id, row.name, row.scope, rate, burst, last_used)
        cache.put(key_hash, principal)
    if time.time() - principal.last_used_epoch > LAST_USED_RESOLUTION_S:
        await _touch(principal, key_hash, cache)
    return principal


async def _touch(principal: Principal, key_hash: str, cache: KeyCache) -> None:
    now = utcnow()
    async with get_database().session() as session:
        await session.execute(
            update(key_repo.ApiKey)
            .where(key_repo.ApiKey.id == principal.key_id)
            .values(last_used_at=now)
        )
    refreshed = Principal(**{**principal.__dict__, "last_used_epoch": now.timestamp()})
    cache.put(key_hash, refreshed)


def authorize(principal: Principal, scope: str) -> None:
    if not principal.allows(scope):
        raise Forbidden(f"This API key has '{principal.scope}' scope; '{scope}' is required")


async def charge(principal: Principal, limiter: MemoryLimiter | RedisLimiter) -> Decision:
    """Spend one request from the key's bucket; 429 with Retry-After when it is empty."""
    if principal.burst is None:
        return unlimited(principal.rate_per_minute)
    decision = await limiter.hit(str(principal.key_id), principal.rate_per_minute, principal.burst)
    if not decision.allowed:
        raise RateLimited(
            f"Rate limit exceeded: {principal.rate_per_minute} requests per minute, "
            f"bursts up to {principal.burst}",
            headers=decision.headers(),
        )
    return decision
