"""Persistence of compacted assets: one row each, and its files under data_dir/compaction/<id>/."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Float, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, utcnow
from models.settings import get_settings


class CompactAsset(Base):
    __tablename__ = "compact_assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    compact_id: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    job_id: Mapped[int | None] = mapped_column(default=None)
    asset_url: Mapped[str | None] = mapped_column(Text, default=None)
    source_name: Mapped[str | None] = mapped_column(String(255), default=None)
    quality_target: Mapped[float] = mapped_column(Float, default=85.0)
    format_preference: Mapped[str] = mapped_column(String(8), default="auto")
    kind: Mapped[str | None] = mapped_column(String(8), default=None)
    original_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    compact_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    rendition_format: Mapped[str | None] = mapped_column(String(8), default=None)
    rendition_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    certificate: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    restored: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    created_by: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


def new_compact_id() -> str:
    return "cmp_" + secrets.token_hex(12)


def asset_dir(compact_id: str) -> Path:
    """The directory of one asset's files (ids are generated, never user-supplied paths)."""
    if not compact_id.startswith("cmp_") or not compact_id[4:].isalnum():
        raise ValueError("bad compact id")
    return get_settings().data_dir / "compaction" / "assets" / compact_id


def remove_files(compact_id: str) -> None:
    shutil.rmtree(asset_dir(compact_id), ignore_errors=True)


async def get_by_compact_id(session: AsyncSession, compact_id: str) -> CompactAsset | None:
    query = select(CompactAsset).where(CompactAsset.compact_id == compact_id)
    return (await session.execute(query)).scalar()
