"""The incident state machine and the incident queries.

A site's incident opens after ``OPEN_AFTER`` consecutive failed probes and resolves after
``RESOLVE_AFTER`` consecutive successful ones, so a flapping upstream yields one incident, not
a storm. While open, severity only escalates. The timeline records transitions (not every
probe): the opening failures, changes in what fails, recoveries, shield mode, agent actions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.errors import BadRequest
from models.sentry import INCIDENT_STATUSES, SEVERITIES, Incident, IncidentEvent, Monitor
from tools.sentry.probes import ProbeOutcome

OPEN_AFTER = 3
RESOLVE_AFTER = 2
TIMELINE_SHOWN = 100


@dataclass
class Transition:
    """An incident opened or resolved by one probe (the caller records it in the ledger)."""

    action: str  # incident_opened | incident_resolved
    incident: Incident


async def open_incident_for(session: AsyncSession, site_id: int) -> Incident | None:
    stmt = select(Incident).where(Incident.site_id == site_id, Incident.status == "open")
    return (await session.execute(stmt.order_by(Incident.id.desc()).limit(1))).scalar()


def add_event(
    session: AsyncSession,
    incident: Incident,
    kind: str,
    *,
    at: dt.datetime,
    message: str = "",
    actor: str = "sentry",
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        IncidentEvent(
            incident_id=incident.id, ts=at, kind=kind, actor=actor, message=message, data=data or {}
        )
    )
    incident.updated_at = at


def _probe_data(outcome: ProbeOutcome) -> dict[str, Any]:
    return {
        "ok": outcome.ok,
        "failures": outcome.failures,
        "status_code": outcome.status_code,
        "latency_ms": outcome.latency_ms,
    }


async def apply_outcome(
    session: AsyncSession, monitor: Monitor, outcome: ProbeOutcome, incident: Incident | None
) -> Transition | None:
    """Advance ``monitor``'s counters with one probe and open/escalate/resolve ``incident``
    (the site's open incident, or None)."""
    at = outcome.started_at
    previous_failures = list(monitor.last_failures or [])
    if outcome.ok:
        monitor.consecutive_successes += 1
        monitor.consecutive_failures = 0
    else:
        monitor.consecutive_failures += 1
        monitor.consecutive_successes = 0
    monitor.last_ok, monitor.last_failures = outcome.ok, outcome.failures
    if incident is None:
        if outcome.ok or monitor.consecutive_failures < OPEN_AFTER:
            return None
        return Transition("incident_opened", await _open(session, monitor, outcome))
    if outcome.ok:
        if monitor.consecutive_successes == 1:
            add_event(session, incident, "probe_recovered", at=at, data=_probe_data(outcome))
        if monitor.consecutive_successes < RESOLVE_AFTER:
            return None
        incident.status, incident.resolved_at = "resolved", at
        add_event(session, incident, "resolved", at=at, message="Site healthy again")
        return Transition("incident_resolved", incident)
    severity = outcome.severity or "low"
    if SEVERITIES.index(severity) > SEVERITIES.index(incident.severity):
        add_event(
            session,
            incident,
            "severity_changed",
            at=at,
            data={"from": incident.severity, "to": severity},
        )
        incident.severity = severity
    if outcome.failures != previous_failures:
        incident.failures = sorted(set(incident.failures) | set(outcome.failures))
        add_event(session, incident, "probe_failed", at=at, data=_probe_data(outcome))
    return None


async def _open(session: AsyncSession, monitor: Monitor, outcome: ProbeOutcome) -> Incident:
    failures = outcome.failures
    incident = Incident(
        site_id=monitor.site_id,
        status="open",
        severity=outcome.severity or "low",
        title=f"Site {monitor.site_id}: {', '.join(failures)} failing",
        failures=failures,
        opened_at=outcome.started_at,
        updated_at=outcome.started_at,
    )
    session.add(incident)
    await session.flush()
    add_event(
        session,
        incident,
        "opened",
        at=outcome.started_at,
        message=f"{monitor.consecutive_failures} consecutive failed probes",
        data=_probe_data(outcome),
    )
    return incident


def incident_dict(incident: Incident, timeline: list[IncidentEvent]) -> dict[str, Any]:
    return {
        "id": incident.id,
        "site_id": incident.site_id,
        "status": incident.status,
        "severity": incident.severity,
        "title": incident.title,
        "failures": list(incident.failures or []),
        "opened_at": incident.opened_at.isoformat(),
        "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
        "resolution": "resolved" if incident.status == "resolved" else "unresolved",
        "timeline_total": len(timeline),
        # The opening event and the latest ones: a long flapping incident stays readable.
        "timeline": [
            {
                "ts": e.ts.isoformat(),
                "kind": e.kind,
                "actor": e.actor,
                "message": e.message,
                "data": e.data,
            }
            for e in _shown(timeline)
        ],
    }


def _shown(timeline: list[IncidentEvent]) -> list[IncidentEvent]:
    if len(timeline) <= TIMELINE_SHOWN:
        return timeline
    return [timeline[0], *timeline[-(TIMELINE_SHOWN - 1) :]]


async def list_incidents(
    session: AsyncSession,
    *,
    status: str = "all",
    severity: str | None = None,
    limit: int = 50,
    offset: int = 0,
    site_id: int | None = None,
) -> dict[str, Any]:
    """Incidents newest first with severity, timeline and resolution status; paginated."""
    _validate(status, severity, limit, offset)
    stmt = select(Incident)
    if status != "all":
        stmt = stmt.where(Incident.status == status)
    if severity is not None:
        stmt = stmt.where(Incident.severity == severity)
    if site_id is not None:
        stmt = stmt.where(Incident.site_id == site_id)
    total = (await session.execute(select(func.count()).select_from(stmt.subquery()))).scalar()
    page = stmt.order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(limit).offset(offset)
    incidents = list((await session.execute(page)).scalars())
    timelines: dict[int, list[IncidentEvent]] = {i.id: [] for i in incidents}
    if incidents:
        events = await session.execute(
            select(IncidentEvent)
            .where(IncidentEvent.incident_id.in_(timelines))
            .order_by(IncidentEvent.id)
        )
        for event in events.scalars():
            timelines[event.incident_id].append(event)
    return {
        "incidents": [incident_dict(i, timelines[i.id]) for i in incidents],
        "total": int(total or 0),
        "limit": limit,
        "offset": offset,
    }


def _validate(status: str, severity: str | None, limit: int, offset: int) -> None:
    bad = []
    if status not in (*INCIDENT_STATUSES, "all"):
        bad.append({"field": "status", "message": "must be one of open, resolved, all"})
    if severity is not None and severity not in SEVERITIES:
        bad.append({"field": "severity", "message": f"must be one of {', '.join(SEVERITIES)}"})
    if not 1 <= limit <= 200:
        bad.append({"field": "limit", "message": "must be between 1 and 200"})
    if offset < 0:
        bad.append({"field": "offset", "message": "must be at least 0"})
    if bad:
        names = ", ".join(f["field"] for f in bad)
        raise BadRequest(f"Invalid request: {names}", fields=bad)
