"""Job-system fixtures: the same suite runs on the in-process pool and on real Celery workers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.jobs.handlers  # noqa: F401  (registers the test.* handlers in this process)
from models import jobs
from models.db import Database, get_database
from models.settings import Settings
from tests.support.processes import Proc

LEASE_SECONDS = "2"


def worker_env(settings: Settings, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {
        "EXECFLOW_DATA_DIR": str(settings.data_dir),
        "EXECFLOW_DATABASE_URL": settings.db_url,
        "EXECFLOW_REDIS_URL": redis_url,
        "EXECFLOW_REDIS_PREFIX": prefix,
        "EXECFLOW_QUEUE_BACKEND": "celery",
        "EXECFLOW_JOB_MODULES": "tests.jobs.handlers",
        "EXECFLOW_JOB_LEASE_SECONDS": LEASE_SECONDS,
        "EXECFLOW_LOG_FORMAT": "text",
    }
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log_path: Path, concurrency: int = 1) -> Proc:
    proc = Proc(["worker", "--concurrency", str(concurrency), "--loglevel", "INFO"], env, log_path)
    proc.wait_log("execflow worker celery:")  # printed at worker_ready
    return proc


class Harness:
    """Runs jobs on one backend; ``procs`` are the Celery worker processes, if any."""

    def __init__(self, kind: str, redis_url: str = "", prefix: str = "") -> None:
        self.kind = kind
        self.redis_url, self.prefix = redis_url, prefix
        self.procs: list[Proc] = []
        self.queue: Any = None
        self.dispatcher: Any = None

    async def stop(self) -> None:
        if self.queue is not None:
            await self.queue.stop()
        if self.dispatcher is not None:
            jobs.remove_job_dispatcher(self.dispatcher)
        for proc in self.procs:
            await asyncio.to_thread(proc.stop)
        if self.procs and self.prefix:  # leave the shared Redis as we found it
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(self.redis_url)
            async for key in client.scan_iter(match=f"{self.prefix}*"):
                await client.delete(key)
            await client.aclose()


async def start_harness(
    kind: str,
    settings: Settings,
    redis_url: str,
    prefix: str,
    tmp: Path,
    *,
    workers: int = 1,
    concurrency: int = 1,
) -> Harness:
    harness = Harness(kind, redis_url, prefix)
    if kind == "inprocess":
        from orchestrator.queue import InProcessQueue

        harness.queue = InProcessQueue(concurrency=concurrency, idle_poll_seconds=0.2)
        await harness.queue.start()
        return harness
    from orchestrator.celery_app import celery_app, celery_dispatcher, configure

    configure(
        celery_app,
        Settings(
            data_dir=settings.data_dir,
            database_url=settings.db_url,
            redis_url=redis_url,
            redis_prefix=prefix,
            queue_backend="celery",
        ),
    )
    jobs.add_job_dispatcher(celery_dispatcher)
    harness.dispatcher = celery_dispatcher
    env = worker_env(settings, redis_url, prefix)
    for i in range(workers):
        log = tmp / f"worker-{uuid.uuid4().hex[:6]}-{i}.log"
        harness.procs.append(await asyncio.to_thread(start_worker, env, log, concurrency))
    return harness


@pytest.fixture(scope="module", params=["inprocess", "celery"])
async def harness(
    request: pytest.FixtureRequest,
    settings: Settings,
    database: Database,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Harness]:
    prefix = f"efjobs{uuid.uuid4().hex[:10]}"  # per harness: no message crosses databases
    h = await start_harness(
        str(request.param), settings, redis_url, prefix, tmp_path_factory.mktemp("w")
    )
    try:
        yield h
    finally:
        await h.stop()


async def wait_until(
    predicate: Callable[[], Awaitable[Any]], timeout: float = 30.0, what: str = "condition"
) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.05)


async def job_of(job_id: int) -> jobs.Job:
    async with get_database().session() as session:
        job = await session.get(jobs.Job, job_id)
        assert job is not None
        return job


async def wait_status(job_id: int, *states: str, timeout: float = 30.0) -> jobs.Job:
    async def check() -> jobs.Job | None:
        job = await job_of(job_id)
        return job if job.status in states else None

    job: jobs.Job = await wait_until(check, timeout, f"job {job_id} in {states}")
    return job


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    yield lambda name: tmp_path / name
