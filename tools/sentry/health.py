"""Health score, threat level and the 24-hour prediction of one site.

Health score (0-100) = 100 minus five capped penalties, each from one signal:

    availability   min(50, 500 * (1 - A))          A = share of successful probes, last 24 h
    latency        min(15, 5 * max(0, L - 1))      L = median latency last hour / 7-day median
    incidents      min(40, sum per open incident)  critical 25, high 15, medium 8, low 3
    block rate     min(15, 30 * B)                 B = VaultShield blocked / requests, last 24 h
    eShield hits   min(10, 10 * log10(1 + H) / 3)  H = eShield threat hits on the site, last 24 h

Threat level, from the same signals (first rule that matches):
    critical  an open critical incident, or score < 40
    high      an open high incident, score < 60, or B >= 0.5
    medium    any open incident, score < 80, B >= 0.1, or H >= 10
    low       otherwise
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.errors import NotFound
from models.sentry import Incident, ProbeResult
from models.sites import Site
from tools.sentry.forecast import forecast
from tools.sentry.traffic import traffic_signals

INCIDENT_PENALTY = {"critical": 25, "high": 15, "medium": 8, "low": 3}
HISTORY = dt.timedelta(days=7)
HORIZON_HOURS = 24


@dataclass
class Signals:
    availability: float = 1.0
    latency_ratio: float = 1.0
    open_incidents: dict[str, int] = field(default_factory=dict)
    block_rate: float = 0.0
    eshield_hits: int = 0


def health_score(signals: Signals) -> tuple[int, dict[str, float]]:
    """The score and each penalty that made it (see the module docstring)."""
    incidents = sum(INCIDENT_PENALTY.get(s, 0) * n for s, n in signals.open_incidents.items())
    penalties = {
        "availability": min(50.0, 500 * (1 - signals.availability)),
        "latency": min(15.0, 5 * max(0.0, signals.latency_ratio - 1)),
        "incidents": float(min(40, incidents)),
        "block_rate": min(15.0, 30 * signals.block_rate),
        "eshield_hits": min(10.0, 10 * math.log10(1 + signals.eshield_hits) / 3),
    }
    penalties = {k: round(max(0.0, v), 2) for k, v in penalties.items()}
    return max(0, min(100, round(100 - sum(penalties.values())))), penalties


def threat_level(signals: Signals, score: int) -> str:
    open_by = signals.open_incidents
    if open_by.get("critical") or score < 40:
        return "critical"
    if open_by.get("high") or score < 60 or signals.block_rate >= 0.5:
        return "high"
    if (
        any(open_by.values())
        or score < 80
        or signals.block_rate >= 0.1
        or signals.eshield_hits >= 10
    ):
        return "medium"
    return "low"


async def _history(session: AsyncSession, site_id: int, since: dt.datetime) -> list[Any]:
    stmt = (
        select(ProbeResult.ts, ProbeResult.ok, ProbeResult.latency_ms)
        .where(ProbeResult.site_id == site_id, ProbeResult.ts >= since)
        .order_by(ProbeResult.ts)
    )
    return list((await session.execute(stmt)).all())


def hourly_series(rows: list[Any], *, now: dt.datetime) -> tuple[list[float], list[float]]:
    """Hourly availability and mean latency over complete hours, oldest first.

    The current, partial hour is left out (it would bias the last point, and this way the
    series, and so the prediction, changes once an hour). Empty hours carry the last value.
    """
    end = _hour_floor(now)
    start = end - HISTORY
    buckets: dict[int, list[Any]] = {}
    for row in rows:
        if start <= row.ts < end:
            buckets.setdefault(int((row.ts - start).total_seconds() // 3600), []).append(row)
    availability: list[float] = []
    latency: list[float] = []
    for hour in range(int(HISTORY.total_seconds() // 3600)):
        group = buckets.get(hour)
        if not group:
            if availability:
                availability.append(availability[-1])
                latency.append(latency[-1])
            continue
        availability.append(sum(1 for r in group if r.ok) / len(group))
        lat = [r.latency_ms for r in group if r.ok and r.latency_ms is not None]
        latency.append(statistics.fmean(lat) if lat else (latency[-1] if latency else 0.0))
    return availability, latency


def _hour_floor(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def prediction(availability: list[float], latency: list[float]) -> dict[str, Any]:
    """The next 24 hours of availability and latency, with intervals and their back-test."""
    if len(availability) < 6:
        return {
            "method": "insufficient_data",
            "horizon_hours": HORIZON_HOURS,
            "hours_of_history": len(availability),
        }

    def one(series: list[float], low: float, high: float | None) -> dict[str, Any]:
        f = forecast(series, HORIZON_HOURS, lower_bound=low, upper_bound=high)
        return {
            "method": f["method"],
            "expected": round(statistics.fmean(f["forecast"]), 4),
            "lower": round(min(f["lower"]), 4),
            "upper": round(max(f["upper"]), 4),
            "hourly": f["forecast"],
            "hourly_lower": f["lower"],
            "hourly_upper": f["upper"],
            "backtest": f["backtest"],
            "candidates": f["candidates"],
        }

    return {
        "method": "exponential_smoothing",
        "horizon_hours": HORIZON_HOURS,
        "hours_of_history": len(availability),
        "availability": one(availability, 0.0, 1.0),
        "latency_ms": one(latency, 0.0, None),
    }


_PREDICTIONS: dict[tuple[str, int, dt.datetime, int], dict[str, Any]] = {}


async def cached_prediction(
    session: AsyncSession, site_id: int, rows: list[Any], now: dt.datetime
) -> dict[str, Any]:
    """The prediction, computed off the event loop once per site and hour of data."""
    hour = _hour_floor(now)
    complete = sum(1 for r in rows if r.ts < hour)
    key = (str(session.get_bind().engine.url), site_id, hour, complete)
    if key not in _PREDICTIONS:
        availability, latency = hourly_series(rows, now=now)
        result = await asyncio.to_thread(prediction, availability, latency)
        while len(_PREDICTIONS) >= 1024:
            _PREDICTIONS.pop(next(iter(_PREDICTIONS)))
        _PREDICTIONS[key] = result
    return _PREDICTIONS[key]


async def get_site_health(
    session: AsyncSession, *, site_id: int, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Health score, threat level, the signals behind them and a 24-hour prediction."""
    site = await session.get(Site, site_id)
    if site is None:
        raise NotFound(f"Site {site_id} not found", code="SITE_NOT_FOUND")
    now = now or dt.datetime.now(dt.UTC)
    rows = await _history(session, site_id, now - HISTORY)
    signals, last_day = await _signals(session, site, rows, now)
    score, penalties = health_score(signals)
    return {
        "site_id": site.id,
        "name": site.name,
        "url": site.url,
        "shield_mode": site.shield_mode,
        "health_score": score,
        "threat_level": threat_level(signals, score),
        "signals": asdict(signals),
        "penalties": penalties,
        "probes_last_24h": len(last_day),
        "prediction": await cached_prediction(session, site.id, rows, now),
    }


async def _signals(
    session: AsyncSession, site: Site, rows: list[Any], now: dt.datetime
) -> tuple[Signals, list[Any]]:
    last_day = [r for r in rows if r.ts >= now - dt.timedelta(hours=24)]
    availability = sum(1 for r in last_day if r.ok) / len(last_day) if last_day else 1.0
    baseline = [r.latency_ms for r in rows if r.ok and r.latency_ms is not None]
    recent = [
        r.latency_ms
        for r in rows
        if r.ok and r.latency_ms is not None and r.ts >= now - dt.timedelta(hours=1)
    ]
    ratio = 1.0
    if baseline and recent and statistics.median(baseline) > 0:
        ratio = statistics.median(recent) / statistics.median(baseline)
    open_rows = await session.execute(
        select(Incident.severity).where(Incident.site_id == site.id, Incident.status == "open")
    )
    open_by: dict[str, int] = {}
    for (severity,) in open_rows.all():
        open_by[severity] = open_by.get(severity, 0) + 1
    traffic = await traffic_signals(session, site_id=site.id, since=now - dt.timedelta(hours=24))
    block_rate = traffic["blocked"] / traffic["requests"] if traffic["requests"] else 0.0
    signals = Signals(
        availability=round(availability, 4),
        latency_ratio=round(ratio, 3),
        open_incidents=open_by,
        block_rate=round(block_rate, 4),
        eshield_hits=traffic["eshield_hits"],
    )
    return signals, last_day
