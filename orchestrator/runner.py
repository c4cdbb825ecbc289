"""Claiming and running one job: shared by the in-process pool and the Celery workers."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import traceback
from typing import Any

from sqlalchemy import select, update

from models.db import get_database, utcnow
from models.jobs import HANDLERS, Job, JobContext, _notify

log = logging.getLogger("execflow.jobs")


async def claim(*, worker: str, job_id: int | None = None) -> Job | None:
    """Atomically move one due job (the given one, or the most urgent) from queued to running."""
    async with get_database().session() as session:
        query = select(Job.id).where(Job.status == "queued", Job.run_after <= utcnow())
        if job_id is not None:
            query = query.where(Job.id == job_id)
        candidates = (
            (await session.execute(query.order_by(Job.priority.desc(), Job.id).limit(8)))
            .scalars()
            .all()
        )
        for candidate in candidates:
            claimed = await session.execute(
                update(Job)
                .where(Job.id == candidate, Job.status == "queued")
                .values(
                    status="running",
                    worker=worker,
                    started_at=utcnow(),
                    attempts=Job.attempts + 1,
                )
            )
            if claimed.rowcount == 1:  # type: ignore[attr-defined]
                await session.commit()
                _notify(candidate)
                return await session.get(Job, candidate, populate_existing=True)
    return None


async def execute(job: Job, *, poll_seconds: float = 0.25) -> str:
    """Run a claimed job's handler to a final (or retry) state, honouring cancel requests."""
    handler = HANDLERS.get(job.name)
    ctx = JobContext(job.id, job.name, dict(job.args), job.attempts, dict(job.steps or {}))
    if handler is None:
        return await _finish(job.id, "failed", error=f"no handler registered for {job.name!r}")
    task: asyncio.Task[Any] = asyncio.ensure_future(handler(ctx, **job.args))
    while not task.done():
        await asyncio.wait({task}, timeout=poll_seconds)
        if not task.done() and await _cancel_requested(job.id):
            task.cancel()
    try:
        result = task.result()
    except asyncio.CancelledError:
        return await _finish(job.id, "cancelled", error="cancelled on request")
    except Exception as exc:
        log.warning("job %s (%s) failed: %s", job.id, job.name, exc)
        if job.attempts < job.max_attempts:
            delay = min(300.0, 2.0**job.attempts)
            return await _finish(job.id, "queued", error=str(exc), retry_in=delay)
        detail = str(exc) or type(exc).__name__
        log.debug("%s", traceback.format_exc())
        return await _finish(job.id, "failed", error=detail)
    return await _finish(job.id, "succeeded", result=result or {})


async def _cancel_requested(job_id: int) -> bool:
    async with get_database().session() as session:
        value = await session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return bool(value)


async def _finish(
    job_id: int,
    status: str,
    *,
    result: dict | None = None,
    error: str | None = None,
    retry_in: float | None = None,
) -> str:
    values: dict = {"status": status, "error": error}
    if status == "queued":
        values.update(run_after=utcnow() + dt.timedelta(seconds=retry_in or 0), worker=None)
    else:
        values.update(finished_at=utcnow(), result=result)
        if status == "succeeded":
            values["progress"] = 1.0
    async with get_database().session() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(**values))
    _notify(job_id)
    return status
