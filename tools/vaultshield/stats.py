"""Traffic statistics: each proxy keeps per-minute totals in memory and writes them as one row
per (site, proxy, minute); the API sums the rows of the last hour and day."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.db import utcnow
from models.traffic import TrafficMinute

COUNTERS = ("requests", "allowed", "blocked", "challenged", "rate_limited", "logged")
TOP_CLIENTS_STORED = 50
TOP_CLIENTS_SHOWN = 10
RETENTION = dt.timedelta(days=2)


@dataclass
class MinuteTotals:
    counts: Counter[str] = field(default_factory=Counter)
    rule_hits: Counter[str] = field(default_factory=Counter)
    clients: Counter[str] = field(default_factory=Counter)
    dirty: bool = True


class StatsRecorder:
    """In-proxy counters, flushed to the database by ``flush`` (called every couple of seconds)."""

    def __init__(self, *, site_id: int, proxy_id: str) -> None:
        self.site_id = site_id
        self.proxy_id = proxy_id
        self.minutes: dict[dt.datetime, MinuteTotals] = {}

    def record(self, outcome: str, client_ip: str, rule_labels: list[str], logged: int) -> None:
        minute = utcnow().replace(second=0, microsecond=0)
        totals = self.minutes.get(minute)
        if totals is None:
            totals = self.minutes[minute] = MinuteTotals()
        totals.dirty = True
        totals.counts["requests"] += 1
        key = {"allow": "allowed", "block": "blocked", "challenge": "challenged"}.get(
            outcome, outcome
        )
        totals.counts[key] += 1
        if logged:
            totals.counts["logged"] += logged
        for label in rule_labels:
            totals.rule_hits[label] += 1
        totals.clients[client_ip] += 1

    async def flush(self, session: AsyncSession) -> None:
        """Write every changed minute (absolute values: a rewrite is harmless)."""
        current = utcnow().replace(second=0, microsecond=0)
        for minute, totals in sorted(self.minutes.items()):
            if totals.dirty:
                await self._write(session, minute, totals)
                totals.dirty = False
        for minute in [m for m in self.minutes if m < current]:
            if not self.minutes[minute].dirty:
                del self.minutes[minute]
        await session.execute(
            delete(TrafficMinute).where(TrafficMinute.minute < current - RETENTION)
        )

    async def _write(
        self, session: AsyncSession, minute: dt.datetime, totals: MinuteTotals
    ) -> None:
        row = (
            await session.execute(
                select(TrafficMinute).where(
                    TrafficMinute.site_id == self.site_id,
                    TrafficMinute.proxy_id == self.proxy_id,
                    TrafficMinute.minute == minute,
                )
            )
        ).scalar()
        if row is None:
            row = TrafficMinute(site_id=self.site_id, proxy_id=self.proxy_id, minute=minute)
            session.add(row)
        for name in COUNTERS:
            setattr(row, name, totals.counts[name])
        row.rule_hits = dict(totals.rule_hits)
        row.clients = dict(totals.clients.most_common(TOP_CLIENTS_STORED))


def _empty() -> dict[str, Any]:
    return {name: 0 for name in COUNTERS} | {"rule_hits": {}, "top_clients": []}


def _render(counts: Counter[str], hits: Counter[str], clients: Counter[str]) -> dict[str, Any]:
    return {name: counts[name] for name in COUNTERS} | {
        "rule_hits": dict(hits.most_common()),
        "top_clients": [
            {"address": ip, "requests": n} for ip, n in clients.most_common(TOP_CLIENTS_SHOWN)
        ],
    }


async def traffic_summary(session: AsyncSession, *, now: dt.datetime) -> dict[str, Any]:
    """{"sites": {site_id: {"last_hour", "last_day"}}, "total": {...}, "empty": {...}}."""
    rows = (
        await session.execute(
            select(TrafficMinute).where(TrafficMinute.minute >= now - dt.timedelta(days=1))
        )
    ).scalars()
    hour_start = now - dt.timedelta(hours=1)
    acc: dict[tuple[int | None, str], tuple[Counter[str], Counter[str], Counter[str]]] = {}
    for row in rows:
        windows = ("last_day", "last_hour") if row.minute >= hour_start else ("last_day",)
        for site in (row.site_id, None):
            for window in windows:
                counts, hits, clients = acc.setdefault(
                    (site, window), (Counter(), Counter(), Counter())
                )
                counts.update({name: getattr(row, name) for name in COUNTERS})
                hits.update({str(k): int(v) for k, v in (row.rule_hits or {}).items()})
                clients.update({str(k): int(v) for k, v in (row.clients or {}).items()})
    rendered: dict[int | None, dict[str, Any]] = {}
    for (site, window), parts in acc.items():
        rendered.setdefault(site, {"last_hour": _empty(), "last_day": _empty()})[window] = _render(
            *parts
        )
    empty = {"last_hour": _empty(), "last_day": _empty()}
    total = rendered.pop(None, empty)
    return {"sites": rendered, "total": total, "empty": empty}


async def site_traffic_stats(
    session: AsyncSession, *, site_id: int, since: dt.datetime
) -> dict[str, int]:
    """One site's requests, blocks and eShield (quarantine) hits since ``since`` (for Sentry V)."""
    rows = (
        await session.execute(
            select(TrafficMinute).where(
                TrafficMinute.site_id == site_id, TrafficMinute.minute >= since
            )
        )
    ).scalars()
    totals = {"requests": 0, "blocked": 0, "eshield_hits": 0}
    for row in rows:
        totals["requests"] += row.requests
        totals["blocked"] += row.blocked
        totals["eshield_hits"] += sum(
            int(v) for k, v in (row.rule_hits or {}).items() if str(k).startswith("q")
        )
    return totals
