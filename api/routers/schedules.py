"""Schedules: cron-driven and incident-triggered agent runs (autonomous remediation)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from api.background import periodically
from api.deps import CurrentKey, RequestId, SessionDep
from api.routers.agents import Autonomy
from api.routing import make_router
from api.schemas import MAX_ID, Ok, id_path
from orchestrator import schedules as service

router = make_router(tags=["schedules"])
log = logging.getLogger("execflow.schedules")


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: Literal["incident_opened"]
    severity: Literal["critical", "high", "medium", "low"] | None = None


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    cron: str | None = Field(default=None, max_length=100)
    trigger: Trigger | None = None
    task: str | None = Field(default=None, min_length=1, max_length=4000)
    playbook: str | None = Field(default=None, max_length=200)
    params: dict[str, Any] | None = None
    agent_type: Literal["security", "remediation", "analysis"] | None = None
    server_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    priority: Literal["low", "normal", "high", "critical"] = "normal"
    autonomy: Autonomy | None = None


class ScheduleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str | None
    cron: str | None
    trigger: dict[str, Any] | None
    task: str | None
    playbook: str | None
    params: dict[str, Any]
    agent_type: str | None
    server_id: int | None
    priority: str
    autonomy: dict[str, Any]
    enabled: bool
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    last_task_id: int | None
    created_at: dt.datetime


class ScheduleOne(Ok):
    schedule: ScheduleRead


class ScheduleList(Ok):
    schedules: list[ScheduleRead]


class ScheduleDeleted(Ok):
    deleted: int


@router.post("/schedules", status_code=201, response_model=ScheduleOne)
async def create_schedule(
    body: ScheduleCreate, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> ScheduleOne:
    """Create a cron or event-triggered agent schedule."""
    row = await service.create_schedule(
        session,
        actor=key.actor,
        cron=body.cron,
        trigger=body.trigger.model_dump() if body.trigger else None,
        task=body.task,
        playbook=body.playbook,
        params=body.params,
        agent_type=body.agent_type,
        server_id=body.server_id,
        priority=body.priority,
        autonomy=body.autonomy.model_dump() if body.autonomy else None,
        name=body.name,
        request_id=request_id,
    )
    return ScheduleOne(schedule=ScheduleRead.model_validate(row))


@router.get("/schedules", response_model=ScheduleList)
async def list_schedules(session: SessionDep) -> ScheduleList:
    """Every agent schedule."""
    rows = await service.list_schedules(session)
    return ScheduleList(schedules=[ScheduleRead.model_validate(r) for r in rows])


@router.get("/schedules/{schedule_id}", response_model=ScheduleOne)
async def get_schedule(session: SessionDep, schedule_id: int = id_path()) -> ScheduleOne:
    """One schedule."""
    return ScheduleOne(
        schedule=ScheduleRead.model_validate(await service.get_schedule(session, schedule_id))
    )


@router.delete("/schedules/{schedule_id}", response_model=ScheduleDeleted)
async def delete_schedule(
    session: SessionDep, key: CurrentKey, request_id: RequestId, schedule_id: int = id_path()
) -> ScheduleDeleted:
    """Delete a schedule (admin)."""
    await service.delete_schedule(session, schedule_id, actor=key.actor, request_id=request_id)
    return ScheduleDeleted(deleted=schedule_id)


async def _run_schedules() -> None:
    await service.run_due()
    await service.run_event_triggers()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Fire due cron schedules and incident triggers every few seconds while the API runs."""
    async with periodically(_run_schedules, 5, what="running schedules"):
        yield
