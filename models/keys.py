"""API keys: only a SHA-256 of each key is stored; scope and plan live here, never in the prefix."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, utcnow

Scope = Literal["read", "write", "admin"]
Plan = Literal["starter", "pro", "enterprise"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin")
PLANS: tuple[Plan, ...] = ("starter", "pro", "enterprise")

# The reference's plan table: requests per minute and burst capacity of the token bucket.
PLAN_LIMITS: dict[str, tuple[int, int | None]] = {"starter": (100, 120), "pro": (500, 600)}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    plan: Mapped[str] = mapped_column(String(16), default="starter")
    rate_per_minute: Mapped[int | None] = mapped_column(default=None)
    burst: Mapped[int | None] = mapped_column(default=None)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(32))
    last4: Mapped[str] = mapped_column(String(4))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    def limits(self) -> tuple[int, int | None]:
        """(requests per minute, burst capacity or None for no cap) for this key."""
        if self.plan == "enterprise":
            rate = self.rate_per_minute or 1000
            return rate, self.burst
        return PLAN_LIMITS[self.plan]


async def get_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return (await session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))).scalar()


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list((await session.execute(select(ApiKey).order_by(ApiKey.id))).scalars())


async def count_active_admins(session: AsyncSession) -> int:
    rows = await session.execute(
        select(ApiKey.id).where(ApiKey.scope == "admin", ApiKey.revoked_at.is_(None))
    )
    return len(rows.all())
