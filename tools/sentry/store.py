"""Storing probe outcomes: results, monitor state and incidents, many per transaction.

The scheduler hands over every outcome that finished since its last flush, so a busy
scheduler commits a few times a second rather than once per probe. Ledger entries for opened
and resolved incidents are recorded after the commit, as ``models.ledger.record`` requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models.db import get_database, session_scope
from models.sentry import Incident, Monitor, ProbeResult
from models.sites import Site
from tools.sentry.incidents import Transition, apply_outcome
from tools.sentry.probes import ProbeOutcome

_sqlite_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def writing() -> AsyncIterator[AsyncSession]:
    """A committing session for read-then-write transactions.

    On SQLite a transaction that reads and then writes fails at once ("database is locked",
    the busy timeout does not apply) when another connection wrote in between, so the
    scheduler's transactions in one process take turns. PostgreSQL needs no turn-taking.
    """
    if get_database().dialect != "sqlite":
        async with session_scope() as session:
            yield session
        return
    lock = _sqlite_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, session_scope() as session:
        yield session


@dataclass
class Finished:
    """One probe's outcome, waiting to be stored."""

    site_id: int
    outcome: ProbeOutcome
    scheduled_for: dt.datetime | None = None
    transition: Transition | None = None
    stored: bool = False


def new_monitor(site_id: int, next_due_at: dt.datetime) -> Monitor:
    return Monitor(
        site_id=site_id,
        next_due_at=next_due_at,
        consecutive_failures=0,
        consecutive_successes=0,
        last_failures=[],
    )


async def store_outcomes(batch: list[Finished]) -> None:
    """Store a batch in one transaction (sites deleted meanwhile are skipped), then audit."""
    if not batch:
        return
    ids = sorted({item.site_id for item in batch})
    rows: list[dict[str, Any]] = []
    async with writing() as session:
        live = set((await session.execute(select(Site.id).where(Site.id.in_(ids)))).scalars())
        monitors = {
            m.site_id: m
            for m in (
                await session.execute(
                    select(Monitor).where(Monitor.site_id.in_(ids)).with_for_update()
                )
            ).scalars()
        }
        incidents = {
            i.site_id: i
            for i in (
                await session.execute(
                    select(Incident)
                    .where(Incident.site_id.in_(ids), Incident.status == "open")
                    .order_by(Incident.id)
                )
            ).scalars()
        }
        for item in batch:
            if item.site_id not in live:
                continue
            monitor = monitors.get(item.site_id)
            if monitor is None:
                monitor = monitors[item.site_id] = new_monitor(
                    item.site_id, item.outcome.started_at
                )
                session.add(monitor)
            rows.append(_result_row(item))
            if item.outcome.content_hash is not None:
                monitor.content_hash = item.outcome.content_hash
            monitor.last_probe_at = item.outcome.started_at
            item.transition = await apply_outcome(
                session, monitor, item.outcome, incidents.get(item.site_id)
            )
            if item.transition is not None:
                incident = item.transition.incident
                incidents.pop(item.site_id, None)
                if incident.status == "open":
                    incidents[item.site_id] = incident
            item.stored = True
        if rows:  # one multi-row INSERT: far cheaper than an ORM object per result
            await session.execute(insert(ProbeResult), rows)
    for item in batch:
        if item.transition is not None:
            await _audit(item.site_id, item.transition)


def _result_row(item: Finished) -> dict[str, Any]:
    outcome = item.outcome
    return {
        "site_id": item.site_id,
        "ts": outcome.started_at,
        "scheduled_for": item.scheduled_for,
        "ok": outcome.ok,
        "severity": outcome.severity,
        "status_code": outcome.status_code,
        "latency_ms": outcome.latency_ms,
        "failures": outcome.failures,
        "warnings": outcome.warnings,
        "checks": outcome.checks_dict(),
    }


async def _audit(site_id: int, transition: Transition) -> None:
    incident = transition.incident
    await ledger.record(
        transition.action,
        actor="sentry",
        target=f"site:{site_id}",
        params={"site_id": site_id, "incident_id": incident.id},
        result={"severity": incident.severity, "failures": list(incident.failures)},
    )


async def prune_results(before: dt.datetime) -> int:
    """Delete probe results older than ``before``."""
    async with writing() as session:
        result = await session.execute(delete(ProbeResult).where(ProbeResult.ts < before))
        return int(getattr(result, "rowcount", 0) or 0)
