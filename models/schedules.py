"""Schedules: cron expressions stored in the database, each firing enqueues a job.

Whoever fires them (the in-process scheduler of ``execflow serve`` or ``execflow beat``) reads
the table on every tick, so a schedule added, changed or deleted through the API applies
without a restart. A firing's job carries the idempotency key ``schedule:<id>:<fire time>``:
two schedulers, or one restarted mid-firing, never enqueue the same firing twice.

Cron: five fields (minute hour day month weekday) or six, the sixth being seconds (croniter).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from croniter import croniter
from sqlalchemy import String, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models import jobs
from models.db import Base, JSONType, get_database, utcnow
from models.errors import BadRequest, Conflict, NotFound

log = logging.getLogger("execflow.jobs")


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    cron: Mapped[str] = mapped_column(String(200))
    job_name: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    enabled: Mapped[bool] = mapped_column(default=True)
    next_run_at: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_job_id: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def to_dict(self) -> dict[str, Any]:
        def iso(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "name": self.name,
            "cron": self.cron,
            "job_name": self.job_name,
            "args": dict(self.args or {}),
            "priority": self.priority,
            "enabled": self.enabled,
            "next_run_at": iso(self.next_run_at),
            "last_run_at": iso(self.last_run_at),
            "last_job_id": self.last_job_id,
            "last_error": self.last_error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def validate_cron(cron: str) -> str:
    cron = " ".join((cron or "").split())
    if len(cron.split()) not in (5, 6) or not croniter.is_valid(cron):
        raise BadRequest(
            "cron must be a valid 5-field (or 6-field, with seconds) cron expression",
            fields=["cron"],
            code="INVALID_CRON",
        )
    return cron


def next_fire(cron: str, after: dt.datetime) -> dt.datetime:
    """The first firing of ``cron`` strictly after ``after`` (UTC)."""
    value = croniter(cron, after.astimezone(dt.UTC)).get_next(dt.datetime)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _check(name: str, job_name: str, priority: str, args: Any) -> None:
    if not name or len(name) > 100:
        raise BadRequest("name is required (at most 100 characters)", fields=["name"])
    if job_name not in jobs.HANDLERS:
        raise BadRequest(f"unknown job {job_name!r}", fields=["job_name"], code="UNKNOWN_JOB")
    if priority not in jobs.PRIORITIES:
        raise BadRequest(
            f"priority must be one of {', '.join(jobs.PRIORITIES)}", fields=["priority"]
        )
    if not isinstance(args, dict):
        raise BadRequest("args must be an object", fields=["args"])


async def create_schedule(
    session: AsyncSession,
    *,
    name: str,
    cron: str,
    job_name: str,
    args: dict[str, Any] | None = None,
    priority: str = "normal",
    enabled: bool = True,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Store a schedule; it fires first at the cron's next time after ``now``."""
    cron = validate_cron(cron)
    args = {} if args is None else args
    _check(name, job_name, priority, args)
    if await session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
        raise Conflict(f"a schedule named {name!r} exists", code="SCHEDULE_EXISTS")
    schedule = Schedule(
        name=name,
        cron=cron,
        job_name=job_name,
        args=args,
        priority=priority,
        enabled=enabled,
        next_run_at=next_fire(cron, now or utcnow()),
    )
    session.add(schedule)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a schedule named {name!r} exists", code="SCHEDULE_EXISTS") from exc
    return schedule.to_dict()


async def list_schedules(
    session: AsyncSession, *, enabled: bool | None = None, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    query = select(Schedule).order_by(Schedule.id).limit(limit).offset(offset)
    if enabled is not None:
        query = query.where(Schedule.enabled == enabled)
    return [s.to_dict() for s in (await session.execute(query)).scalars()]


async def get_schedule(session: AsyncSession, *, schedule_id: int) -> dict[str, Any]:
    schedule = await session.get(Schedule, schedule_id)
    if schedule is None:
        raise NotFound(f"Schedule {schedule_id} not found")
    return schedule.to_dict()


async def update_schedule(
    session: AsyncSession,
    *,
    schedule_id: int,
    cron: str | None = None,
    args: dict[str, Any] | None = None,
    priority: str | None = None,
    enabled: bool | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Change a schedule; a new cron (or re-enabling) recomputes its next firing."""
    schedule = await session.get(Schedule, schedule_id)
    if schedule is None:
        raise NotFound(f"Schedule {schedule_id} not found")
    _check(
        schedule.name,
        schedule.job_name,
        priority or schedule.priority,
        schedule.args if args is None else args,
    )
    reschedule = False
    if cron is not None:
        schedule.cron, reschedule = validate_cron(cron), True
    if args is not None:
        schedule.args = args
    if priority is not None:
        schedule.priority = priority
    if enabled is not None:
        reschedule = reschedule or (enabled and not schedule.enabled)
        schedule.enabled = enabled
    if reschedule:
        schedule.next_run_at = next_fire(schedule.cron, now or utcnow())
    await session.flush()
    return schedule.to_dict()


async def delete_schedule(session: AsyncSession, *, schedule_id: int) -> dict[str, Any]:
    schedule = await session.get(Schedule, schedule_id)
    if schedule is None:
        raise NotFound(f"Schedule {schedule_id} not found")
    data = schedule.to_dict()
    await session.delete(schedule)
    await session.flush()
    return data


def firing_key(schedule_id: int, fire_at: dt.datetime) -> str:
    return f"schedule:{schedule_id}:{fire_at.astimezone(dt.UTC).isoformat()}"


async def fire_due(now: dt.datetime | None = None) -> list[int]:
    """Enqueue one job for every enabled schedule that is due at ``now``; returns the job ids.

    Missed firings (the scheduler was down) collapse into one: the schedule then moves to its
    next time after ``now``. The job is enqueued before the schedule advances, with a key
    unique to the firing, so a crash in between re-finds the same job instead of firing twice.
    """
    now = now or utcnow()
    db = get_database()
    async with db.session() as session:
        due = list(
            (
                await session.execute(
                    select(Schedule)
                    .where(Schedule.enabled.is_(True), Schedule.next_run_at <= now)
                    .order_by(Schedule.next_run_at, Schedule.id)
                    .limit(200)
                )
            ).scalars()
        )
    fired: list[int] = []
    for schedule in due:
        fire_at = schedule.next_run_at
        assert fire_at is not None
        job_id: int | None = None
        error: str | None = None
        try:
            job_id = await jobs.enqueue(
                schedule.job_name,
                dict(schedule.args or {}),
                priority=schedule.priority,
                idempotency_key=firing_key(schedule.id, fire_at),
                schedule_id=schedule.id,
            )
        except BadRequest as exc:  # e.g. the job's handler is not registered in this process
            error = str(exc)
            log.warning("schedule %s (%s) could not fire: %s", schedule.id, schedule.name, exc)
        values: dict[str, Any] = {
            "next_run_at": next_fire(schedule.cron, max(now, fire_at)),
            "last_run_at": fire_at,
            "last_error": error,
        }
        if job_id is not None:
            values["last_job_id"] = job_id
        async with db.session() as session:
            advanced = await session.execute(
                update(Schedule)
                .where(Schedule.id == schedule.id, Schedule.next_run_at == fire_at)
                .values(**values)
            )
        if job_id is not None and advanced.rowcount == 1:  # type: ignore[attr-defined]
            fired.append(job_id)
    return fired


async def next_due_at() -> dt.datetime | None:
    """When the earliest enabled schedule is due (the scheduler sleeps until then, or less)."""
    async with get_database().session() as session:
        value = await session.scalar(
            select(Schedule.next_run_at)
            .where(Schedule.enabled.is_(True))
            .order_by(Schedule.next_run_at)
            .limit(1)
        )
    return value
