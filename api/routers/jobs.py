"""Jobs: read, list, cancel and follow background work (``/api/jobs``).

The module's ``lifespan`` wires the job system into the API process: with the Celery backend
it installs the dispatcher that hands new jobs to Celery; with the in-process backend it runs
the cron scheduler next to the workers (``api.app`` starts the worker pool itself).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import MAX_ID, Ok, id_path
from models import ledger
from models import schedules as schedule_repo
from models.settings import get_settings
from orchestrator import jobs as job_service

router = make_router(tags=["jobs"])

KEEPALIVE_SECONDS = 15.0


class JobRead(BaseModel):
    id: int
    name: str
    args: dict[str, Any]
    priority: str
    status: str
    progress: float
    message: str | None
    result: dict[str, Any] | None
    error: str | None
    idempotency_key: str | None
    steps: list[str]
    attempts: int
    max_attempts: int
    cancel_requested: bool
    worker: str | None
    schedule_id: int | None
    run_after: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    updated_at: str | None


class JobList(Ok):
    jobs: list[JobRead]
    total: int
    limit: int
    offset: int


class JobOne(Ok):
    job: JobRead


class ScheduleRead(BaseModel):
    id: int
    name: str
    cron: str
    job_name: str
    args: dict[str, Any]
    priority: str
    enabled: bool
    next_run_at: str | None
    last_run_at: str | None
    last_job_id: int | None
    last_error: str | None
    created_at: str | None
    updated_at: str | None


class ScheduleList(Ok):
    schedules: list[ScheduleRead]


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    session: SessionDep,
    status: str | None = Query(
        default=None, description="queued, running, succeeded, failed or cancelled"
    ),
    name: str | None = Query(default=None, max_length=100),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_ID),
) -> JobList:
    """List jobs, newest first."""
    rows = await job_service.list_jobs(
        session, status=status, name=name, limit=limit, offset=offset
    )
    total = await job_service.count_jobs(session, status=status, name=name)
    return JobList(
        jobs=[JobRead(**j.to_dict()) for j in rows], total=total, limit=limit, offset=offset
    )


@router.get("/jobs/schedules", response_model=ScheduleList)
async def list_schedules(
    session: SessionDep,
    limit: int = Query(default=100, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_ID),
) -> ScheduleList:
    """The cron schedules that enqueue jobs (read-only; managed under /api/schedules)."""
    rows = await schedule_repo.list_schedules(session, limit=limit, offset=offset)
    return ScheduleList(schedules=[ScheduleRead(**s) for s in rows])


@router.get(
    "/jobs/events",
    response_class=StreamingResponse,
    openapi_extra={"x-scope": "read", "x-stream": True},
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: int | None = Query(
        default=None, ge=1, le=MAX_ID, description="Follow one job until it ends"
    ),
    name: str | None = Query(default=None, max_length=100),
    max_seconds: float | None = Query(
        default=None, gt=0, le=86400, description="End the stream after this many seconds"
    ),
) -> StreamingResponse:
    """Server-Sent Events: one ``job`` event per job status/progress change."""
    events = job_service.watch_jobs(job_id=job_id, name=name, max_seconds=max_seconds)
    first = await anext(events, None) if job_id is not None else None  # 404 before streaming
    return StreamingResponse(
        _sse(events, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(
    events: AsyncIterator[dict[str, Any] | None], first: dict[str, Any] | None
) -> AsyncIterator[str]:
    import time

    yield "retry: 2000\n\n"
    last = time.monotonic()
    try:
        if first is not None:
            yield _frame(first)
        async for event in events:
            if event is not None:
                yield _frame(event)
                last = time.monotonic()
            elif time.monotonic() - last >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last = time.monotonic()
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _frame(job: dict[str, Any]) -> str:
    return f"event: job\nid: {job['id']}:{job['updated_at']}\ndata: {json.dumps(job)}\n\n"


@router.get("/jobs/{job_id}", response_model=JobOne)
async def get_job(session: SessionDep, job_id: int = id_path()) -> JobOne:
    """One job: status, progress, result or error, timestamps."""
    return JobOne(job=JobRead(**await job_service.get_job(session, job_id=job_id)))


@router.post("/jobs/{job_id}/cancel", response_model=JobOne)
async def cancel_job(
    session: SessionDep, key: CurrentKey, request_id: RequestId, job_id: int = id_path()
) -> JobOne:
    """Cancel a queued job, or ask a running one to stop (409 JOB_FINISHED if it has ended)."""
    job = await job_service.cancel_job(session, job_id=job_id)
    await session.commit()
    await ledger.record(
        "job.cancel",
        actor=key.actor,
        target=f"job:{job_id}",
        params={"name": job["name"]},
        result={"status": job["status"], "cancel_requested": job["cancel_requested"]},
        request_id=request_id,
    )
    return JobOne(job=JobRead(**job))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = getattr(app.state, "settings", None) or get_settings()
    job_service.import_job_modules(settings)
    async with AsyncExitStack() as stack:
        if settings.queue_backend == "celery":
            from models.jobs import add_job_dispatcher, remove_job_dispatcher
            from orchestrator.celery_app import celery_app, celery_dispatcher, configure

            configure(celery_app, settings)
            add_job_dispatcher(celery_dispatcher)
            stack.callback(remove_job_dispatcher, celery_dispatcher)
        elif getattr(app.state, "queue", None) is not None and settings.scheduler_enabled:
            from orchestrator.scheduler import Scheduler

            scheduler = Scheduler()
            scheduler.start()
            stack.push_async_callback(scheduler.stop)
        yield
