"""API keys for tests and benches that drive real processes, created through the service in
the database those processes share (the key is returned once, like ``execflow keys create``)."""

from __future__ import annotations

from api.keys import create_api_key
from models.db import Database


async def unlimited_admin_key(db: Database, *, name: str = "admin") -> str:
    """An admin key whose rate limit the test or bench never reaches."""
    async with db.session() as session:
        _, key = await create_api_key(
            session,
            name=name,
            scope="admin",
            plan="enterprise",
            rate_per_minute=100_000_000,
            actor="test",
        )
    return key


async def limited_read_key(db: Database, *, rate: int, burst: int) -> tuple[str, int]:
    """A read key limited to ``rate`` per minute with bursts of ``burst``; (key, its id)."""
    async with db.session() as session:
        row, key = await create_api_key(
            session,
            name="limited",
            scope="read",
            plan="enterprise",
            rate_per_minute=rate,
            burst=burst,
            actor="test",
        )
    return key, row.id
