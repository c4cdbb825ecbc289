"""Playbooks (YAML files registered in the database) and their runs with per-step results."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, utcnow


class Playbook(Base):
    __tablename__ = "playbooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    server_specific: Mapped[bool] = mapped_column(default=True)
    # The validated definition: {"params": [...], "steps": [...]} as read from the YAML file.
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    source: Mapped[str | None] = mapped_column(String(1024), default=None)
    checksum: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PlaybookRun(Base):
    __tablename__ = "playbook_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    playbook_id: Mapped[int] = mapped_column(ForeignKey("playbooks.id", ondelete="CASCADE"))
    server_id: Mapped[int | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    actor: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    job_id: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    duration_ms: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


async def list_playbooks(session: AsyncSession) -> list[Playbook]:
    return list((await session.execute(select(Playbook).order_by(Playbook.id))).scalars())


async def get_playbook(session: AsyncSession, key: int | str) -> Playbook | None:
    """By id (an int or a string of digits) or by name."""
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        return await session.get(Playbook, int(key))
    return (await session.execute(select(Playbook).where(Playbook.name == key))).scalar()


async def last_runs(session: AsyncSession) -> dict[int, PlaybookRun]:
    """The most recent run of each playbook, by playbook id."""
    rows = (await session.execute(select(PlaybookRun).order_by(PlaybookRun.id))).scalars()
    return {run.playbook_id: run for run in rows}
