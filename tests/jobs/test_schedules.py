"""Cron schedules with an injected clock: on time, once per firing, missed firings collapse."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select

import tests.jobs.handlers  # noqa: F401
from models import jobs, schedules
from models.db import Database
from models.errors import BadRequest, Conflict, NotFound
from orchestrator.scheduler import Scheduler

T0 = dt.datetime(2030, 1, 1, 12, 1, 30, tzinfo=dt.UTC)


async def _jobs_of(database: Database, schedule_id: int) -> list[jobs.Job]:
    async with database.session() as session:
        rows = await session.execute(
            select(jobs.Job).where(jobs.Job.schedule_id == schedule_id).order_by(jobs.Job.id)
        )
        return list(rows.scalars())


async def test_schedule_fires_on_time_and_once(database: Database) -> None:
    clock = [T0]
    scheduler = Scheduler(clock=lambda: clock[0])
    async with database.session() as session:
        created = await schedules.create_schedule(
            session,
            name="every-5-min",
            cron="*/5 * * * *",
            job_name="test.noop",
            args={"k": 1},
            priority="low",
            now=clock[0],
        )
    first = dt.datetime(2030, 1, 1, 12, 5, tzinfo=dt.UTC)
    assert created["next_run_at"] == first.isoformat()
    assert await scheduler.tick() == []  # 12:01:30: nothing due
    clock[0] = first - dt.timedelta(seconds=1)
    assert await scheduler.tick() == []
    clock[0] = first
    fired = await scheduler.tick()
    assert len(fired) == 1
    assert await scheduler.tick() == []  # same instant again: no double firing
    job = (await _jobs_of(database, created["id"]))[0]
    assert job.name == "test.noop" and job.args == {"k": 1} and job.priority_name == "low"
    assert job.idempotency_key == schedules.firing_key(created["id"], first)
    async with database.session() as session:
        now = await schedules.get_schedule(session, schedule_id=created["id"])
    assert now["last_run_at"] == first.isoformat() and now["last_job_id"] == fired[0]
    assert now["next_run_at"] == (first + dt.timedelta(minutes=5)).isoformat()

    # Two schedulers (two beats, or a beat and a restarted one) tick the same firing at once.
    second = first + dt.timedelta(minutes=5)
    results = await asyncio.gather(scheduler.tick(second), Scheduler().tick(second))
    assert len(set(results[0] + results[1])) == 1
    assert len(await _jobs_of(database, created["id"])) == 2

    # Down for an hour: the missed firings collapse into one, then it is back on its cron.
    late = second + dt.timedelta(hours=1, seconds=7)
    assert len(await scheduler.tick(late)) == 1
    assert len(await _jobs_of(database, created["id"])) == 3
    async with database.session() as session:
        now = await schedules.get_schedule(session, schedule_id=created["id"])
    assert dt.datetime.fromisoformat(now["next_run_at"]) == dt.datetime(
        2030, 1, 1, 13, 15, tzinfo=dt.UTC
    )

    # Disabled schedules do not fire; re-enabling resumes from the next time.
    async with database.session() as session:
        await schedules.update_schedule(session, schedule_id=created["id"], enabled=False)
    assert await scheduler.tick(late + dt.timedelta(hours=2)) == []
    async with database.session() as session:
        again = await schedules.update_schedule(
            session, schedule_id=created["id"], enabled=True, now=late + dt.timedelta(hours=2)
        )
    assert dt.datetime.fromisoformat(again["next_run_at"]) > late + dt.timedelta(hours=2)
    async with database.session() as session:
        await schedules.delete_schedule(session, schedule_id=created["id"])
        assert all(s["id"] != created["id"] for s in await schedules.list_schedules(session))


async def test_bad_schedules_are_refused(database: Database) -> None:
    async with database.session() as session:
        for kwargs, field in (
            ({"cron": "every minute"}, "cron"),
            ({"cron": "61 * * * *"}, "cron"),
            ({"job_name": "no.such.job"}, "job_name"),
            ({"priority": "urgent"}, "priority"),
        ):
            args = {"name": f"bad-{field}", "cron": "* * * * *", "job_name": "test.noop"}
            args.update(kwargs)
            with pytest.raises(BadRequest) as err:
                await schedules.create_schedule(session, **args)
            assert err.value.body()["code"] in ("VALIDATION_ERROR", "INVALID_CRON", "UNKNOWN_JOB")
        assert await schedules.list_schedules(session) == [] or all(
            not s["name"].startswith("bad-") for s in await schedules.list_schedules(session)
        )
    async with database.session() as session:
        await schedules.create_schedule(session, name="dup", cron="0 * * * *", job_name="test.noop")
    async with database.session() as session:
        with pytest.raises(Conflict):
            await schedules.create_schedule(
                session, name="dup", cron="0 * * * *", job_name="test.noop"
            )
    async with database.session() as session:
        with pytest.raises(NotFound):
            await schedules.delete_schedule(session, schedule_id=999999)
