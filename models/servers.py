"""Managed servers: where commands and playbooks run. Credentials are stored encrypted."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models.crypto import encrypted_column
from models.db import Base, JSONType, utcnow


class Server(Base):
    __tablename__ = "servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(default=22)
    username: Mapped[str | None] = mapped_column(String(64), default=None)
    # Fernet token of the private key or password (models.crypto); never returned by the API.
    credential_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    credential_kind: Mapped[str | None] = mapped_column(String(16), default=None)
    host_key: Mapped[str | None] = mapped_column(Text, default=None)
    trust_on_first_use: Mapped[bool] = mapped_column(default=False)
    transport: Mapped[str] = mapped_column(String(8), default="ssh")
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    last_seen: Mapped[dt.datetime | None] = mapped_column(default=None)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


async def list_servers(session: AsyncSession, *, tag: str | None = None) -> list[Server]:
    rows = (await session.execute(select(Server).order_by(Server.id))).scalars()
    return [s for s in rows if tag is None or tag in (s.tags or [])]


async def get_server(session: AsyncSession, server_id: int) -> Server | None:
    return await session.get(Server, server_id)


encrypted_column(Server.credential_encrypted)
