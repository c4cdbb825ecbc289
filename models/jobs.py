"""Jobs: the durable record of all background work, and the registry of job handlers.

Job state lives in the database so the API, the CLI and every worker see the same truth.
Handlers are registered by name with ``@job_handler("name")``; ``tools`` modules register their
own, and the orchestrator's workers (in-process or Celery) run them. ``enqueue`` stores the job
and then wakes whichever dispatcher the orchestrator installed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sqlalchemy import String, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, get_database, utcnow
from models.errors import BadRequest

Priority = Literal["low", "normal", "high", "critical"]
PRIORITIES: dict[str, int] = {"low": 0, "normal": 1, "high": 2, "critical": 3}
PRIORITY_NAMES = {v: k for k, v in PRIORITIES.items()}
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
T = TypeVar("T")


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


@dataclass
class JobContext:
    """What a handler gets: its job's id and arguments, progress reporting, once-only steps."""

    job_id: int
    name: str
    args: dict[str, Any]
    attempt: int
    steps: dict[str, Any] = field(default_factory=dict)

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
_listeners: list[Callable[[int], None]] = []


def add_dispatcher(fn: Callable[[int], None]) -> None:
    _dispatchers.append(fn)


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
) -> int:
    """Store a job (queued) and wake a worker; the same idempotency key returns the same job."""
    if priority not in PRIORITIES:
        raise BadRequest(f"priority must be one of {', '.join(PRIORITIES)}", fields=["priority"])
    if name not in HANDLERS:
        raise BadRequest(f"unknown job {name!r}", fields=["name"])
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
    )
    try:
        async with db.session() as session:
            session.add(job)
    except IntegrityError:  # a concurrent enqueue with the same key won
        async with db.session() as session:
            existing = await _by_key(session, idempotency_key or "")
            assert existing is not None
            return existing.id
    for dispatch in list(_dispatchers):
        dispatch(job.id)
    _notify(job.id)
    return job.id


async def _by_key(session: AsyncSession, key: str) -> Job | None:
    return (await session.execute(select(Job).where(Job.idempotency_key == key))).scalar()


async def get_job(session: AsyncSession, job_id: int) -> Job | None:
    return await session.get(Job, job_id)


async def list_jobs(
    session: AsyncSession,
    *,
    status: str | None = None,
    name: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
    if status:
        query = query.where(Job.status == status)
    if name:
        query = query.where(Job.name == name)
    return list((await session.execute(query)).scalars())


async def request_cancel(session: AsyncSession, job_id: int) -> Job | None:
    """Cancel a queued job at once; ask a running one to stop. Final jobs are left as they are."""
    job = await session.get(Job, job_id)
    if job is None or job.status in FINAL_STATES:
        return job
    if job.status == "queued":
        job.status, job.finished_at = "cancelled", utcnow()
    else:
        job.cancel_requested = True
    await session.flush()
    _notify(job_id)
    return job
