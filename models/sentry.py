"""Sentry V persistence: per-site monitor state, probe results, incidents and their timelines."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, utcnow

SEVERITIES = ("low", "medium", "high", "critical")
INCIDENT_STATUSES = ("open", "resolved")


class Monitor(Base):
    """What the scheduler and the incident state machine remember about one site."""

    __tablename__ = "sentry_monitors"

    site_id: Mapped[int] = mapped_column(
        ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True
    )
    next_due_at: Mapped[dt.datetime] = mapped_column(index=True)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    consecutive_successes: Mapped[int] = mapped_column(default=0)
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    last_ok: Mapped[bool | None] = mapped_column(default=None)
    last_failures: Mapped[list[str]] = mapped_column(JSONType, default=list)
    last_probe_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class ProbeResult(Base):
    __tablename__ = "sentry_probe_results"
    __table_args__ = (Index("ix_sentry_probe_results_site_ts", "site_id", "ts"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    ts: Mapped[dt.datetime] = mapped_column()
    scheduled_for: Mapped[dt.datetime | None] = mapped_column(default=None)
    ok: Mapped[bool] = mapped_column()
    severity: Mapped[str | None] = mapped_column(String(16), default=None)
    status_code: Mapped[int | None] = mapped_column(default=None)
    latency_ms: Mapped[float | None] = mapped_column(default=None)
    failures: Mapped[list[str]] = mapped_column(JSONType, default=list)
    warnings: Mapped[list[str]] = mapped_column(JSONType, default=list)
    checks: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class Incident(Base):
    __tablename__ = "sentry_incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="open")
    severity: Mapped[str] = mapped_column(String(16), index=True)
    title: Mapped[str] = mapped_column(String(300))
    failures: Mapped[list[str]] = mapped_column(JSONType, default=list)
    opened_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IncidentEvent(Base):
    """One line of an incident's timeline: probe results, shield mode changes, agent actions."""

    __tablename__ = "sentry_incident_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("sentry_incidents.id", ondelete="CASCADE"), index=True
    )
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200), default="sentry")
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
