"""The job suite, run on both backends (in-process pool and real Celery workers on Redis)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from models import jobs, schedules
from models.db import get_database, utcnow
from models.errors import BadRequest
from orchestrator.scheduler import Scheduler
from tests.jobs.conftest import Harness, job_of, lines, wait_status, wait_until

pytestmark = pytest.mark.timeout(240)


async def test_job_runs_and_reports_progress(harness: Harness) -> None:
    job_id = await jobs.enqueue("test.progress", {})
    job = await wait_status(job_id, "succeeded", "failed")
    assert job.status == "succeeded", job.error
    assert job.result == {"ok": True}
    assert job.progress == 1.0 and job.message == "half way"
    assert job.attempts == 1 and job.started_at and job.finished_at
    assert job.worker and job.worker.startswith(harness.kind)


async def test_idempotency_key_returns_the_same_job(harness: Harness) -> None:
    first = await jobs.enqueue("test.noop", {"n": 1}, idempotency_key=f"idem-{harness.kind}")
    second = await jobs.enqueue("test.noop", {"n": 2}, idempotency_key=f"idem-{harness.kind}")
    assert first == second
    job = await wait_status(first, "succeeded")
    assert job.result == {"ok": True, "echo": {"n": 1}}


async def test_bad_enqueue_is_refused(harness: Harness) -> None:
    with pytest.raises(BadRequest):
        await jobs.enqueue("test.noop", {}, priority="urgent")
    with pytest.raises(BadRequest):
        await jobs.enqueue("no.such.job", {})


async def test_priorities_are_honoured_under_load(
    harness: Harness, files: Callable[[str], Path]
) -> None:
    gate, marker = files("gate"), files("marker")
    blocker = await jobs.enqueue("test.effect", {"marker": str(marker), "gate": str(gate)})
    await wait_until(lambda: asyncio.sleep(0, lines(marker)), what="blocker started")
    order = ["low", "critical", "low", "normal", "high", "low", "critical", "normal", "high"]
    ids = [await jobs.enqueue("test.noop", {"i": i}, priority=p) for i, p in enumerate(order)]
    await asyncio.sleep(0.5)  # every message is in the broker / every row is queued
    gate.touch()
    await wait_status(blocker, "succeeded")
    done = [await wait_status(i, "succeeded") for i in ids]
    started = sorted(done, key=lambda j: (j.started_at, j.id))
    ranks = [j.priority for j in started]
    assert ranks == sorted(ranks, reverse=True), [j.priority_name for j in started]


async def test_cancel_queued_and_running_jobs(
    harness: Harness, files: Callable[[str], Path]
) -> None:
    marker = files("marker")
    running = await jobs.enqueue(
        "test.effect", {"marker": str(marker), "gate": str(files("never")), "timeout": 60}
    )
    await wait_until(lambda: asyncio.sleep(0, lines(marker)), what="job started")
    queued = await jobs.enqueue("test.noop", {})  # concurrency 1: waits behind `running`
    async with get_database().session() as session:
        job = await jobs.request_cancel(session, queued)
        assert job is not None and job.status == "cancelled"
        job = await jobs.request_cancel(session, running)
        assert job is not None and job.cancel_requested
    job = await wait_status(running, "cancelled", "failed", "succeeded")
    assert job.status == "cancelled" and job.finished_at is not None
    await asyncio.sleep(0.3)
    assert (await job_of(queued)).status == "cancelled"  # a late message did not revive it
    after = await jobs.enqueue("test.noop", {})
    assert (await wait_status(after, "succeeded")).status == "succeeded"


async def test_retryable_job_retries_with_backoff(harness: Harness) -> None:
    recovers = await jobs.enqueue("test.flaky", {"fail_times": 1}, max_attempts=2)
    gives_up = await jobs.enqueue("test.flaky", {"fail_times": 5}, max_attempts=2)
    job = await wait_status(recovers, "succeeded", "failed", timeout=40)
    assert job.status == "succeeded" and job.attempts == 2 and job.result == {"attempt": 2}
    job = await wait_status(gives_up, "succeeded", "failed", timeout=40)
    assert job.status == "failed" and job.attempts == 2
    assert job.error is not None and "attempt 2" in job.error


async def test_delayed_job_waits(harness: Harness) -> None:
    job_id = await jobs.enqueue("test.noop", {}, delay_seconds=1.0)
    assert (await job_of(job_id)).status == "queued"
    job = await wait_status(job_id, "succeeded")
    assert job.started_at is not None and job.started_at >= job.run_after


async def test_redelivered_job_does_not_repeat_completed_steps(
    harness: Harness, files: Callable[[str], Path]
) -> None:
    """A job left running by a dead worker (lapsed lease) resumes; its done step is replayed."""
    effects = files("effects")
    effects.write_text("job first-run\n")  # the side effect the dead worker completed
    now = utcnow()
    async with get_database().session() as session:
        job = jobs.Job(
            name="test.effect",
            args={"effects": str(effects)},
            priority=jobs.PRIORITIES["normal"],
            status="running",
            steps={"effect": None},
            attempts=1,
            max_attempts=1,
            worker="celery:lost-host:4242",
            started_at=now - dt.timedelta(seconds=30),
            lease_expires_at=now - dt.timedelta(seconds=5),
            run_after=now - dt.timedelta(seconds=30),
        )
        session.add(job)
    if harness.kind == "inprocess":
        jobs._notify(job.id)
        for dispatch in list(jobs._dispatchers):
            dispatch(job.id)
    job = await wait_status(job.id, "succeeded", "failed", timeout=30)
    assert job.status == "succeeded", job.error
    assert job.attempts == 2 and job.worker != "celery:lost-host:4242"
    assert lines(effects) == ["job first-run"]


async def test_schedule_fires_and_new_schedule_applies_without_restart(
    harness: Harness,
) -> None:
    scheduler = Scheduler(poll_seconds=0.2)
    scheduler.start()
    try:
        async with get_database().session() as session:
            created = await schedules.create_schedule(
                session,
                name=f"every-second-{harness.kind}",
                cron="* * * * * *",
                job_name="test.noop",
                args={"from": "schedule"},
                priority="high",
            )

        async def fired() -> list[jobs.Job]:
            async with get_database().session() as session:
                rows = await session.execute(
                    select(jobs.Job).where(
                        jobs.Job.schedule_id == created["id"], jobs.Job.status == "succeeded"
                    )
                )
                return list(rows.scalars())

        done = await wait_until(fired, timeout=30, what="a scheduled job succeeded")
        assert done[0].result == {"ok": True, "echo": {"from": "schedule"}}
        assert done[0].idempotency_key.startswith(f"schedule:{created['id']}:")
        async with get_database().session() as session:
            await schedules.update_schedule(session, schedule_id=created["id"], enabled=False)
    finally:
        await scheduler.stop()
