"""Sites: what Sentry V monitors and the VaultShield proxy protects."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, utcnow


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    upstream_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    allowlist: Mapped[list[str]] = mapped_column(JSONType, default=list)
    shield_mode: Mapped[bool] = mapped_column(default=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


async def list_sites(session: AsyncSession) -> list[Site]:
    return list((await session.execute(select(Site).order_by(Site.id))).scalars())


async def get_site(session: AsyncSession, site_id: int) -> Site | None:
    return await session.get(Site, site_id)
