"""Jobs: the durable record of all background work, and the registry of job handlers.

Job state lives in the database so the API, the CLI and every worker see the same truth.
Handlers are registered by name with ``@job_handler("name")``; ``tools`` modules register their
own, and the orchestrator's workers (in-process or Celery) run them. ``enqueue`` stores the job
and then wakes whichever dispatcher the orchestrator installed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sqlalchemy import String, Text, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, get_database, utcnow
from models.errors import BadRequest

Priority = Literal["low", "normal", "high", "critical"]
PRIORITIES: dict[str, int] = {"low": 0, "normal": 1, "high": 2, "critical": 3}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
T = TypeVar("T")
log = logging.getLogger("execflow.jobs")


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    priority: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(default=0.0)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    steps: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=1)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    run_after: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Added by 0003_jobs: leases (reclaiming a dead worker's job), dispatch bookkeeping (so a
    # job is handed to a broker again if its message was lost), a change stamp for event
    # streams, and the schedule that fired the job.
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime | None] = mapped_column(
        default=utcnow, onupdate=utcnow, index=True
    )
    schedule_id: Mapped[int | None] = mapped_column(default=None, index=True)

    @property
    def priority_name(self) -> str:
        return PRIORITY_NAMES.get(self.priority, str(self.priority))

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-able data (API, CLI, event stream)."""
        return {
            "id": self.id,
            "name": self.name,
            "args": dict(self.args or {}),
            "priority": self.priority_name,
            "status": self.status,
            "progress": self.progress,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "idempotency_key": self.idempotency_key,
            "steps": sorted((self.steps or {}).keys()),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "cancel_requested": self.cancel_requested,
            "worker": self.worker,
            "schedule_id": self.schedule_id,
            "run_after": _iso(self.run_after),
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass
class JobContext:
    """What a handler gets: its job's id and arguments, progress reporting, once-only steps."""

    job_id: int
    name: str
    args: dict[str, Any]
    attempt: int
    steps: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None

    def effect_key(self, step: str) -> str:
        """A stable key for ``step`` of this job: pass it to external systems that deduplicate."""
        return f"{self.idempotency_key or f'job:{self.job_id}'}:{step}"

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress in [0, 1] with an optional human-readable message."""
        async with get_database().session() as session:
            await session.execute(
                update(Job)
                .where(Job.id == self.job_id)
                .values(progress=max(0.0, min(1.0, fraction)), message=message)
            )
        _notify(self.job_id)

    async def step(self, key: str, effect: Callable[[], Awaitable[T]]) -> T:
        """Run ``effect`` once across redeliveries: a completed step's stored result is replayed."""
        if key in self.steps:
            return self.steps[key]  # type: ignore[no-any-return]
        value = await effect()
        self.steps[key] = value
        async with get_database().session() as session:
            await session.execute(
                update(Job).where(Job.id == self.job_id).values(steps=dict(self.steps))
            )
        return value


JobHandler = Callable[..., Awaitable[dict[str, Any] | None]]
HANDLERS: dict[str, JobHandler] = {}


def job_handler(name: str) -> Callable[[JobHandler], JobHandler]:
    """Register ``fn(ctx: JobContext, **args)`` as the handler of jobs called ``name``."""

    def register(fn: JobHandler) -> JobHandler:
        HANDLERS[name] = fn
        return fn

    return register


# Dispatchers are installed by the orchestrator: called with a job id after it is stored.
_dispatchers: list[Callable[[int], None]] = []
# Job dispatchers get the stored job (its priority picks a broker queue) and may do I/O.
_job_dispatchers: list[Callable[[Job], Awaitable[None]]] = []
_listeners: list[Callable[[int], None]] = []


def add_dispatcher(fn: Callable[[int], None]) -> None:
    _dispatchers.append(fn)


def remove_dispatcher(fn: Callable[[int], None]) -> None:
    if fn in _dispatchers:
        _dispatchers.remove(fn)


def add_job_dispatcher(fn: Callable[[Job], Awaitable[None]]) -> None:
    """Install an async dispatcher called with each newly stored, due job (e.g. Celery's)."""
    _job_dispatchers.append(fn)


def remove_job_dispatcher(fn: Callable[[Job], Awaitable[None]]) -> None:
    if fn in _job_dispatchers:
        _job_dispatchers.remove(fn)


def remove_listener(fn: Callable[[int], None]) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def add_listener(fn: Callable[[int], None]) -> None:
    """Be told (in this process) whenever a job's state or progress changes."""
    _listeners.append(fn)


def _notify(job_id: int) -> None:
    for fn in list(_listeners):
        fn(job_id)


async def enqueue(
    name: str,
    args: dict[str, Any] | None = None,
    *,
    priority: str = "normal",
    idempotency_key: str | None = None,
    delay_seconds: float = 0,
    max_attempts: int = 1,
    schedule_id: int | None = None,
) -> int:
    """Store a job (queued) and wake a worker; the same idempotency key returns the same job.

    ``max_attempts`` > 1 makes the job retryable: a failed attempt is queued again after an
    exponential backoff. ``delay_seconds`` defers the first run.
    """
    if priority not in PRIORITIES:
        raise BadRequest(f"priority must be one of {', '.join(PRIORITIES)}", fields=["priority"])
    if name not in HANDLERS:
        raise BadRequest(f"unknown job {name!r}", fields=["name"])
    if max_attempts < 1 or max_attempts > 100:
        raise BadRequest("max_attempts must be between 1 and 100", fields=["max_attempts"])
    if delay_seconds < 0:
        raise BadRequest("delay_seconds must not be negative", fields=["delay_seconds"])
    due_now = delay_seconds <= 0
    db = get_database()
    if idempotency_key is not None:
        async with db.session() as session:
            existing = await _by_key(session, idempotency_key)
            if existing is not None:
                return existing.id
    job = Job(
        name=name,
        args=args or {},
        priority=PRIORITIES[priority],
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        run_after=utcnow() + dt.timedelta(seconds=delay_seconds),
        schedule_id=schedule_id,
        dispatched_at=utcnow() if due_now and _job_dispatchers else None,
    )
    try:
        async with db.session() as session:
            session.add(job)
    except IntegrityError:  # a concurrent enqueue with the same key won
        async with db.session() as session:
            existing = await _by_key(session, idempotency_key or "")
            assert existing is not None
            return existing.id
    if due_now:  # delayed jobs are found by the workers' polling / the dispatch sweep
        for dispatch in list(_dispatchers):
            dispatch(job.id)
        for dispatch_job in list(_job_dispatchers):
            try:
                await dispatch_job(job)
            except Exception:  # the job is stored; the dispatch sweep hands it over later
                log.exception("dispatching job %s failed; it will be dispatched again", job.id)
    _notify(job.id)
    return job.id


async def _by_key(session: AsyncSession, key: str) -> Job | None:
    return (await session.execute(select(Job).where(Job.idempotency_key == key))).scalar()


async def get_job(session: AsyncSession, job_id: int) -> Job | None:
    return await session.get(Job, job_id)


def _filtered(query: Any, status: str | None, name: str | None) -> Any:
    if status:
        if status not in STATES:
            raise BadRequest(f"status must be one of {', '.join(STATES)}", fields=["status"])
        query = query.where(Job.status == status)
    if name:
        query = query.where(Job.name == name)
    return query


async def list_jobs(
    session: AsyncSession,
    *,
    status: str | None = None,
    name: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Job]:
    """Jobs, newest first, optionally of one status and/or name."""
    query = _filtered(select(Job), status, name)
    query = query.order_by(Job.id.desc()).limit(limit).offset(offset)
    return list((await session.execute(query)).scalars())


async def count_jobs(
    session: AsyncSession, *, status: str | None = None, name: str | None = None
) -> int:
    query = _filtered(select(func.count(Job.id)), status, name)
    return int(await session.scalar(query) or 0)


async def request_cancel(session: AsyncSession, job_id: int) -> Job | None:
    """Cancel a queued job at once; ask a running one to stop. Final jobs are left as they are.

    Both are conditional updates, so a cancel racing a worker's claim or finish never
    overwrites the state the worker wrote.
    """
    job = await session.get(Job, job_id)
    if job is None or job.status in FINAL_STATES:
        return job
    now = utcnow()
    cancelled = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", finished_at=now, error="cancelled on request")
    )
    if cancelled.rowcount != 1:  # type: ignore[attr-defined]
        await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(cancel_requested=True)
        )
    await session.flush()
    job = await session.get(Job, job_id, populate_existing=True)
    _notify(job_id)
    return job
