"""Traffic plane tables: VaultShield rules, change version, proxy statistics; eShield threats
and quarantines."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, utcnow


class VaultShieldRule(Base):
    __tablename__ = "vaultshield_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), index=True, default=None
    )
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(1024))
    action: Mapped[str] = mapped_column(String(16), default="block")
    priority: Mapped[int] = mapped_column(default=100)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VaultShieldState(Base):
    """One row per key; ``rules`` carries the version every proxy polls or is told about."""

    __tablename__ = "vaultshield_state"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrafficMinute(Base):
    """One proxy's totals for one site and one minute (rewritten while the minute is open)."""

    __tablename__ = "vaultshield_traffic"
    __table_args__ = (UniqueConstraint("site_id", "proxy_id", "minute"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(index=True)
    proxy_id: Mapped[str] = mapped_column(String(64))
    minute: Mapped[dt.datetime] = mapped_column(index=True)
    requests: Mapped[int] = mapped_column(default=0)
    allowed: Mapped[int] = mapped_column(default=0)
    blocked: Mapped[int] = mapped_column(default=0)
    challenged: Mapped[int] = mapped_column(default=0)
    rate_limited: Mapped[int] = mapped_column(default=0)
    logged: Mapped[int] = mapped_column(default=0)
    rule_hits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    clients: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class ThreatIndicator(Base):
    __tablename__ = "threat_indicators"
    __table_args__ = (UniqueConstraint("type", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(16), index=True)  # ip, cidr, domain, hash
    value: Mapped[str] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[int] = mapped_column(default=50)
    first_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)


class Quarantine(Base):
    __tablename__ = "quarantines"
    __table_args__ = (Index("ix_quarantines_status_target", "status", "target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))  # ip, cidr, hostname
    addresses: Mapped[list[str]] = mapped_column(JSONType, default=list)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    forced: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active/released/expired
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)
    released_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    released_by: Mapped[str | None] = mapped_column(String(200), default=None)
