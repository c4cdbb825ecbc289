"""Real processes: Celery workers killed mid-job, ``execflow beat``, ``execflow serve`` restarts."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from models import jobs, schedules
from models.db import Database, get_database
from models.settings import Settings
from tests.jobs.conftest import (
    Proc,
    job_of,
    lines,
    start_harness,
    wait_status,
    wait_until,
    worker_env,
)
from tests.support.processes import free_port, run_cli, wait_http

pytestmark = pytest.mark.timeout(300)


async def test_celery_worker_killed_mid_job(
    settings: Settings, database: Database, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL the worker running a job: another worker completes it, its step is not redone."""
    prefix = f"efkill{uuid.uuid4().hex[:8]}"
    harness = await start_harness("celery", settings, redis_url, prefix, tmp_path, workers=2)
    try:
        effects, marker, gate = tmp_path / "effects", tmp_path / "marker", tmp_path / "gate"
        victim_job = await jobs.enqueue(
            "test.effect",
            {"effects": str(effects), "marker": str(marker), "gate": str(gate)},
            idempotency_key=f"kill-{prefix}",
        )
        await wait_until(lambda: asyncio.sleep(0, lines(marker)), what="job started")
        job = await job_of(victim_job)
        assert job.status == "running" and job.worker
        pid = int(job.worker.rsplit(":", 1)[1])
        victim = next(p for p in harness.procs if p.pid == pid)
        others = [await jobs.enqueue("test.noop", {"i": i}) for i in range(4)]
        await asyncio.to_thread(victim.kill)
        gate.touch()
        job = await wait_status(victim_job, "succeeded", "failed", timeout=60)
        assert job.status == "succeeded", job.error
        assert job.attempts == 2 and job.worker and not job.worker.endswith(f":{pid}")
        assert lines(effects) == [f"job {victim_job}"], "the completed step ran again"
        assert len(lines(marker)) == 2  # the handler itself did run twice
        for other in others:  # nothing lost
            assert (await wait_status(other, "succeeded", timeout=60)).status == "succeeded"
    finally:
        await harness.stop()


async def test_beat_fires_schedules_added_while_running(
    settings: Settings, database: Database, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"efbeat{uuid.uuid4().hex[:8]}"
    harness = await start_harness("celery", settings, redis_url, prefix, tmp_path)
    beat = Proc(["beat", "--poll", "0.5"], worker_env(settings, redis_url, prefix), tmp_path / "b")
    try:
        await asyncio.to_thread(beat.wait_log, "execflow beat running")
        async with get_database().session() as session:
            created = await schedules.create_schedule(
                session, name=f"beat-{prefix}", cron="* * * * * */2", job_name="test.noop"
            )

        async def succeeded() -> list[jobs.Job]:
            async with get_database().session() as session:
                rows = await session.execute(
                    select(jobs.Job).where(
                        jobs.Job.schedule_id == created["id"], jobs.Job.status == "succeeded"
                    )
                )
                return list(rows.scalars())

        done = await wait_until(succeeded, timeout=60, what="a beat-fired job succeeded")
        assert done[0].worker and done[0].worker.startswith("celery:")
        async with get_database().session() as session:
            await schedules.update_schedule(session, schedule_id=created["id"], enabled=False)
    finally:
        await asyncio.to_thread(beat.stop)
        await harness.stop()


def _serve(settings: Settings, port: int, log: Path) -> Proc:
    env = {
        "EXECFLOW_DATA_DIR": str(settings.data_dir),
        "EXECFLOW_DATABASE_URL": settings.db_url,
        "EXECFLOW_JOB_MODULES": "tests.jobs.handlers",
        "EXECFLOW_WORKER_CONCURRENCY": "1",
        "EXECFLOW_LOG_FORMAT": "text",
    }
    proc = Proc(["serve", "--host", "127.0.0.1", "--port", str(port)], env, log)
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90)
    return proc


async def test_embedded_server_restart_resumes_jobs(
    settings: Settings, database: Database, make_key, tmp_path: Path
) -> None:
    """Kill ``execflow serve`` mid-job: the next start resumes the running and queued jobs."""
    effects, marker, gate = tmp_path / "effects", tmp_path / "marker", tmp_path / "gate"
    port = free_port()
    first = await asyncio.to_thread(_serve, settings, port, tmp_path / "serve1.log")
    try:
        running = await jobs.enqueue(
            "test.effect", {"effects": str(effects), "marker": str(marker), "gate": str(gate)}
        )
        await wait_until(lambda: asyncio.sleep(0, lines(marker)), timeout=60, what="started")
        queued = [await jobs.enqueue("test.noop", {"i": i}) for i in range(3)]
        await asyncio.to_thread(first.kill)
    finally:
        await asyncio.to_thread(first.stop)
    assert (await job_of(running)).status == "running"
    assert [(await job_of(q)).status for q in queued] == ["queued"] * 3

    second = await asyncio.to_thread(_serve, settings, port, tmp_path / "serve2.log")
    try:
        key = await make_key("read")
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        await wait_until(lambda: asyncio.sleep(0, len(lines(marker)) >= 2), timeout=30)
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client,
            client.stream("GET", "/api/jobs/events", params={"job_id": running}) as stream,
        ):
            assert stream.status_code == 200
            gate.touch()
            events = [
                json.loads(line[6:]) async for line in stream.aiter_lines() if line[:6] == "data: "
            ]
        assert events[-1]["status"] == "succeeded" and events[-1]["attempts"] == 2
        for q in queued:
            assert (await wait_status(q, "succeeded")).status == "succeeded"
        assert lines(effects) == [f"job {running}"]

        env = {
            "EXECFLOW_DATA_DIR": str(settings.data_dir),
            "EXECFLOW_DATABASE_URL": settings.db_url,
        }
        out = await asyncio.to_thread(run_cli, "jobs", "list", "--name", "test.noop", env=env)
        assert out.returncode == 0, out.stderr
        assert all(str(q) in out.stdout for q in queued)
        out = await asyncio.to_thread(run_cli, "jobs", "show", str(running), env=env)
        assert out.returncode == 0 and json.loads(out.stdout)["status"] == "succeeded"
        out = await asyncio.to_thread(run_cli, "jobs", "follow", str(running), env=env)
        assert out.returncode == 0 and "succeeded" in out.stdout
        out = await asyncio.to_thread(run_cli, "jobs", "show", "999999", env=env)
        assert out.returncode == 1 and "not found" in out.stderr
    finally:
        await asyncio.to_thread(second.stop)
