"""Sentry V: site health, incidents and shield mode; the probe scheduler runs in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import MAX_ID, Ok, id_path
from models.settings import get_settings
from tools import sentry

router = make_router(tags=["sentry"])


class HealthRead(Ok):
    model_config = ConfigDict(extra="allow")

    site_id: int
    health_score: int
    threat_level: str
    prediction: dict[str, Any]


class IncidentList(Ok):
    incidents: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


class ShieldModeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
    enabled: StrictBool


class ShieldModeRead(Ok):
    site_id: int
    shield_mode: bool
    previous: bool
    changed: bool
    incident_id: int | None
    propagated: bool


@router.get("/sentry/health/{site_id}", response_model=HealthRead)
async def get_site_health(session: SessionDep, site_id: int = id_path()) -> HealthRead:
    """Current health score, threat level, and 24-hour prediction for a monitored site."""
    return HealthRead(**await sentry.get_site_health(session, site_id=site_id))


@router.get("/sentry/incidents", response_model=IncidentList)
async def list_incidents(
    session: SessionDep,
    status: str = Query(default="all", description="open, resolved or all"),
    severity: str | None = Query(default=None, description="critical, high, medium or low"),
    limit: int = Query(default=50, ge=1, le=200),
    offset: int = Query(default=0, ge=0, le=MAX_ID),
    site_id: int | None = Query(
        default=None, ge=1, le=MAX_ID, description="Only this site's incidents"
    ),
) -> IncidentList:
    """Incidents with severity, timeline and resolution status, newest first. Paginated."""
    page = await sentry.list_incidents(
        session, status=status, severity=severity, limit=limit, offset=offset, site_id=site_id
    )
    return IncidentList(**page)


@router.post("/sentry/shield-mode", response_model=ShieldModeRead)
async def set_shield_mode(
    body: ShieldModeUpdate, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> ShieldModeRead:
    """Toggle shield mode (maximum defensive posture) for a site; audited."""
    result = await sentry.set_shield_mode(
        session, site_id=body.site_id, enabled=body.enabled, actor=key.actor, request_id=request_id
    )
    return ShieldModeRead(**result)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the probe scheduler while the API runs (EXECFLOW_SENTRY_SCHEDULER=off disables it)."""
    settings = get_settings()
    if not settings.sentry_scheduler:
        yield
        return
    scheduler = sentry.ProbeScheduler(concurrency=settings.sentry_concurrency)
    scheduler.start()
    app.state.sentry_scheduler = scheduler
    try:
        yield
    finally:
        await scheduler.stop()
