"""The job system's one interface: enqueue, read, list, cancel and watch jobs.

Handlers register with ``models.jobs.job_handler``; ``enqueue`` stores a job and wakes the
backend in force (the in-process pool of ``execflow serve`` or Celery workers, chosen by
``EXECFLOW_QUEUE_BACKEND``). Job state lives in the database, so the API, the CLI and every
worker see the same truth; ``watch_jobs`` turns its changes into a stream of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import jobs
from models.db import get_database, utcnow
from models.errors import BadRequest, Conflict, NotFound
from models.jobs import (
    FINAL_STATES,
    PRIORITIES,
    STATES,
    Job,
    JobContext,
    count_jobs,
    enqueue,
    job_handler,
    list_jobs,
)
from models.settings import Settings, get_settings

__all__ = [
    "FINAL_STATES",
    "PRIORITIES",
    "STATES",
    "Job",
    "JobContext",
    "cancel_job",
    "count_jobs",
    "enqueue",
    "get_job",
    "import_job_modules",
    "job_handler",
    "list_jobs",
    "watch_jobs",
]


def import_job_modules(settings: Settings | None = None) -> None:
    """Import the modules named in ``EXECFLOW_JOB_MODULES`` so their handlers register."""
    for module in (settings or get_settings()).job_modules:
        importlib.import_module(module)


async def get_job(session: AsyncSession, *, job_id: int) -> dict[str, Any]:
    """One job as data; NotFound when there is none."""
    job = await jobs.get_job(session, job_id)
    if job is None:
        raise NotFound(f"Job {job_id} not found")
    return job.to_dict()


async def cancel_job(session: AsyncSession, *, job_id: int) -> dict[str, Any]:
    """Cancel a queued job now, or ask a running one to stop (it ends ``cancelled``).

    NotFound for an unknown job; Conflict (JOB_FINISHED) for one already final.
    """
    job = await jobs.get_job(session, job_id)
    if job is None:
        raise NotFound(f"Job {job_id} not found")
    if job.status in FINAL_STATES:
        raise Conflict(f"Job {job_id} already {job.status}", code="JOB_FINISHED")
    job = await jobs.request_cancel(session, job_id)
    assert job is not None
    return job.to_dict()


async def watch_jobs(
    *,
    job_id: int | None = None,
    name: str | None = None,
    poll_seconds: float = 0.5,
    overlap_seconds: float = 2.0,
    max_seconds: float | None = None,
) -> AsyncIterator[dict[str, Any] | None]:
    """Yield each job whose status, progress or message changes (``None`` = keep-alive tick).

    Reads the database (so changes made by any process, e.g. Celery workers, are seen), and
    is woken early by changes made in this process. With ``job_id`` it first yields that job's
    current state and ends once the job is final.
    """
    if poll_seconds <= 0:
        raise BadRequest("poll_seconds must be positive", fields=["poll_seconds"])
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()

    def listener(_job_id: int) -> None:
        loop.call_soon_threadsafe(wake.set)

    db = get_database()
    overlap = dt.timedelta(seconds=overlap_seconds)
    seen: dict[int, tuple[tuple[Any, ...], dt.datetime | None]] = {}
    cursor = utcnow()
    deadline = None if max_seconds is None else loop.time() + max_seconds
    jobs.add_listener(listener)
    try:
        if job_id is not None:
            async with db.session() as session:
                job = await session.get(Job, job_id)
                if job is None:
                    raise NotFound(f"Job {job_id} not found")
                seen[job.id] = (_snapshot(job), job.updated_at)
                yield job.to_dict()
                if job.status in FINAL_STATES:
                    return
        while deadline is None or loop.time() < deadline:
            wake.clear()
            query = select(Job).where(Job.updated_at >= cursor - overlap)
            if job_id is not None:
                query = query.where(Job.id == job_id)
            if name:
                query = query.where(Job.name == name)
            async with db.session() as session:
                rows = list(
                    (await session.execute(query.order_by(Job.updated_at, Job.id).limit(1000)))
                    .scalars()
                    .all()
                )
            for job in rows:
                snap = _snapshot(job)
                previous = seen.get(job.id)
                seen[job.id] = (snap, job.updated_at)
                if previous is None or previous[0] != snap:
                    yield job.to_dict()
                    if job_id is not None and job.status in FINAL_STATES:
                        return
                if job.updated_at is not None and job.updated_at > cursor:
                    cursor = job.updated_at
            horizon = cursor - overlap - overlap
            for key in [k for k, v in seen.items() if v[1] is None or v[1] < horizon]:
                del seen[key]
            yield None
            timeout = poll_seconds
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
    finally:
        jobs.remove_listener(listener)


def _snapshot(job: Job) -> tuple[Any, ...]:
    return (job.status, job.progress, job.message, job.attempts)
