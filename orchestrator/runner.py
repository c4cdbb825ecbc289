"""Claiming and running one job: shared by the in-process pool and the Celery workers.

Delivery is at-least-once; the database makes it safe:

- ``claim`` moves a job to ``running`` with a conditional UPDATE, so exactly one worker wins,
  and gives it a lease (``lease_expires_at``) that ``execute`` renews while the handler runs.
- A job whose worker died (SIGKILL, lost machine) keeps ``running`` with a lapsed lease; the
  next ``claim`` takes it over (a new attempt) and the handler's completed ``ctx.step`` results
  are replayed, not re-run.
- Every write a worker makes after claiming is fenced on ``worker`` still being itself, so a
  worker that stalled past its lease and lost the job cannot overwrite the new owner's state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
from typing import Any

from sqlalchemy import and_, or_, select, update

from models.db import get_database, utcnow
from models.jobs import HANDLERS, Job, JobContext, _notify
from models.settings import get_settings

log = logging.getLogger("execflow.jobs")

# A job whose worker died this many times beyond its max_attempts is failed, not retried
# forever (a handler that kills its worker must not take the fleet down with it).
MAX_LOST_DELIVERIES = 3
RETRY_BACKOFF_BASE = 2.0
RETRY_BACKOFF_MAX = 300.0


def worker_name(kind: str) -> str:
    """``kind:host:pid``, the identity a worker writes into the jobs it claims."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


def lease_seconds() -> float:
    return get_settings().job_lease_seconds


def _due(now: dt.datetime) -> Any:
    return or_(
        and_(Job.status == "queued", Job.run_after <= now),
        and_(Job.status == "running", Job.lease_expires_at < now),
    )


async def claim(*, worker: str, job_id: int | None = None) -> Job | None:
    """Atomically take one due job (the given one, or the most urgent) and return it running.

    Due means queued with ``run_after`` passed, or running with a lapsed lease (its worker
    died). Returns None when there is nothing (or the given job is not) claimable.
    """
    now = utcnow()
    lease = now + dt.timedelta(seconds=lease_seconds())
    take = {
        "status": "running",
        "worker": worker,
        "started_at": now,
        "lease_expires_at": lease,
        "dispatched_at": None,
        "attempts": Job.attempts + 1,
    }
    async with get_database().session() as session:
        if job_id is not None:
            # The common case (a broker message for a queued job): one UPDATE ... RETURNING.
            fresh = and_(Job.id == job_id, Job.status == "queued", Job.run_after <= now)
            job = await session.scalar(
                update(Job)
                .where(fresh)
                .values(**take)
                .returning(Job)
                .execution_options(populate_existing=True)
            )
            if job is not None:
                await session.commit()
                _notify(job_id)
                return job
        query = select(Job.id, Job.status, Job.cancel_requested, Job.attempts, Job.max_attempts)
        query = query.where(_due(now))
        if job_id is not None:
            query = query.where(Job.id == job_id)
        query = query.order_by(Job.priority.desc(), Job.id)
        if get_database().dialect == "postgresql":
            # Concurrent claimers skip each other's candidates instead of queueing on them.
            query = query.limit(1).with_for_update(skip_locked=True)
        else:
            query = query.limit(8)
        rows = (await session.execute(query)).all()
        for candidate, status, cancel_requested, attempts, max_attempts in rows:
            same_state = and_(Job.id == candidate, _due(now), Job.status == status)
            if status == "running" and (
                cancel_requested or attempts >= max_attempts + MAX_LOST_DELIVERIES
            ):
                final, error = (
                    ("cancelled", "cancelled on request")
                    if cancel_requested
                    else ("failed", f"worker lost {attempts} times; giving up")
                )
                await session.execute(
                    update(Job)
                    .where(same_state)
                    .values(status=final, error=error, finished_at=now, lease_expires_at=None)
                )
                await session.commit()
                _notify(candidate)
                continue
            if status == "running":
                log.warning(
                    "job %s: lease lapsed, reclaiming it (attempt %s)", candidate, attempts + 1
                )
            claimed = await session.scalar(
                update(Job)
                .where(same_state)
                .values(**take)
                .returning(Job)
                .execution_options(populate_existing=True)
            )
            if claimed is not None:
                await session.commit()
                _notify(candidate)
                return claimed
        await session.commit()
    return None


async def execute(job: Job, *, poll_seconds: float = 0.25) -> str:
    """Run a claimed job's handler to a final (or retry) state, honouring cancel requests.

    Returns the state written: succeeded, failed, cancelled, queued (a retry), or ``lost`` when
    another worker took the job over (this worker's lease lapsed) and nothing was written.
    """
    worker = job.worker or ""
    handler = HANDLERS.get(job.name)
    ctx = JobContext(
        job.id,
        job.name,
        dict(job.args),
        job.attempts,
        dict(job.steps or {}),
        idempotency_key=job.idempotency_key,
    )
    if handler is None:
        return await _finish(job, "failed", error=f"no handler registered for {job.name!r}")
    task: asyncio.Task[Any] = asyncio.ensure_future(handler(ctx, **job.args))
    renew_every = max(0.05, lease_seconds() / 3)
    last_renewal = time.monotonic()
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=poll_seconds)
            if task.done():
                break
            renew = time.monotonic() - last_renewal >= renew_every
            state = await _heartbeat(job.id, worker, renew=renew)
            if renew:
                last_renewal = time.monotonic()
            if state == "lost":
                log.warning("job %s: lease lost to another worker; abandoning this run", job.id)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return "lost"
            if state == "cancel":
                task.cancel()
    except asyncio.CancelledError:
        # The worker is stopping: stop the handler too. The job stays running under this
        # worker's lease, so a restart here (dead pid) or any worker (lapsed lease) resumes it.
        task.cancel()
        raise
    try:
        result = task.result()
    except asyncio.CancelledError:
        return await _finish(job, "cancelled", error="cancelled on request")
    except Exception as exc:
        detail = str(exc) or type(exc).__name__
        log.warning("job %s (%s) attempt %s failed: %s", job.id, job.name, job.attempts, detail)
        if job.attempts < job.max_attempts:
            delay = min(RETRY_BACKOFF_MAX, RETRY_BACKOFF_BASE**job.attempts)
            return await _finish(job, "queued", error=detail, retry_in=delay)
        return await _finish(job, "failed", error=detail)
    if result is not None and not isinstance(result, dict):
        result = {"value": result}
    return await _finish(job, "succeeded", result=result or {})


async def _heartbeat(job_id: int, worker: str, *, renew: bool) -> str:
    """``ok``, ``cancel`` (a cancel was requested) or ``lost`` (the job is no longer ours)."""
    async with get_database().session() as session:
        row = (
            await session.execute(
                select(Job.worker, Job.status, Job.cancel_requested).where(Job.id == job_id)
            )
        ).first()
        if row is None or row.worker != worker or row.status != "running":
            return "lost"
        if renew:
            lease = utcnow() + dt.timedelta(seconds=lease_seconds())
            renewed = await session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker == worker, Job.status == "running")
                .values(lease_expires_at=lease, updated_at=Job.updated_at)  # not a visible change
                .execution_options(synchronize_session=False)
            )
            if renewed.rowcount != 1:  # type: ignore[attr-defined]
                return "lost"
        return "cancel" if row.cancel_requested else "ok"


async def _finish(
    job: Job,
    status: str,
    *,
    result: dict | None = None,
    error: str | None = None,
    retry_in: float | None = None,
) -> str:
    values: dict = {"status": status, "error": error, "lease_expires_at": None}
    if status == "queued":
        values.update(
            run_after=utcnow() + dt.timedelta(seconds=retry_in or 0),
            worker=None,
            dispatched_at=None,
            cancel_requested=False,
        )
    else:
        values.update(finished_at=utcnow(), result=result)
        if status == "succeeded":
            values["progress"] = 1.0
    async with get_database().session() as session:
        written = await session.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == "running", Job.worker == job.worker)
            .values(**values)
        )
    if written.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("job %s: no longer ours when finishing (%s); result dropped", job.id, status)
        return "lost"
    _notify(job.id)
    return status
