"""Job system throughput and enqueue-to-start latency, per backend.

    .venv/bin/python -m evals.bench_jobs [--db sqlite|postgres] [--jobs 1000] [--latency-jobs 200]

For each backend (the in-process pool in this process; Celery: ``execflow worker`` subprocesses
on the local Redis) it measures:

- throughput: N no-op jobs enqueued back to back; jobs/s = N / (first enqueue -> last finish);
- latency: M no-op jobs enqueued one at a time with the workers idle; enqueue-to-start is the
  job's ``started_at - created_at`` (both stamped on this host), reported as p50/p99.

Goal (issue 6): p99 under 50 ms in-process and under 200 ms through Celery on loopback Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from models import jobs
from models.jobs import JobContext, job_handler

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("EXECFLOW_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_ADMIN_URL = os.environ.get(
    "EXECFLOW_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@job_handler("bench.noop")
async def noop(ctx: JobContext, **_: Any) -> dict[str, Any] | None:
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _count_done(ids: list[int]) -> int:
    from models.db import get_database

    async with get_database().session() as session:
        return int(
            await session.scalar(
                select(func.count(jobs.Job.id)).where(
                    jobs.Job.id.in_(ids), jobs.Job.status.in_(jobs.FINAL_STATES)
                )
            )
            or 0
        )


async def _wait_all(ids: list[int], limit_s: float) -> float:
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        if await _count_done(ids) == len(ids):
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{len(ids)} jobs did not all finish within {limit_s}s")


async def throughput(n: int, producers: int = 8, limit_s: float = 120) -> tuple[float, float]:
    """(end-to-end jobs/s, enqueue jobs/s): ``producers`` tasks enqueue ``n`` jobs at once."""
    start = time.perf_counter()

    async def produce(count: int) -> list[int]:
        return [await jobs.enqueue("bench.noop", {}) for _ in range(count)]

    share = [n // producers + (1 if i < n % producers else 0) for i in range(producers)]
    batches = await asyncio.gather(*(produce(c) for c in share))
    enqueued = time.perf_counter()
    ids = [i for batch in batches for i in batch]
    end = await _wait_all(ids, limit_s)
    return n / (end - start), n / (enqueued - start)


async def baseline() -> tuple[float, float]:
    """The database's own cost on this machine now: (SELECT 1 ms, one-row INSERT+COMMIT ms)."""
    from sqlalchemy import text

    from models.db import get_database

    db = get_database()
    async with db.engine.connect() as conn:
        t = time.perf_counter()
        for _ in range(50):
            await conn.execute(text("SELECT 1"))
        select_ms = (time.perf_counter() - t) / 50 * 1000
        await conn.rollback()
    async with db.engine.connect() as conn:
        await conn.execute(text("CREATE TABLE bench_baseline (x INTEGER)"))
        await conn.commit()
        t = time.perf_counter()
        for _ in range(50):
            await conn.execute(text("INSERT INTO bench_baseline VALUES (1)"))
            await conn.commit()
        commit_ms = (time.perf_counter() - t) / 50 * 1000
        await conn.execute(text("DROP TABLE bench_baseline"))
        await conn.commit()
    return select_ms, commit_ms


async def latency(m: int, gap: float = 0.01, limit_s: float = 60) -> list[float]:
    from models.db import get_database

    ids = []
    for _ in range(m):
        job_id = await jobs.enqueue("bench.noop", {})
        ids.append(job_id)
        await _wait_all([job_id], limit_s)
        await asyncio.sleep(gap)
    async with get_database().session() as session:
        rows = (
            await session.execute(
                select(jobs.Job.created_at, jobs.Job.started_at).where(jobs.Job.id.in_(ids))
            )
        ).all()
    return [(s - c).total_seconds() * 1000 for c, s in rows if s is not None]


async def _make_database(kind: str, tmp: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp / 'bench.db'}", None
    import asyncpg

    name = f"ef_bench_{uuid.uuid4().hex[:10]}"
    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}", drop


def _start_worker(env: dict[str, str], log: Path, concurrency: int) -> subprocess.Popen[bytes]:
    out = open(log, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            *("-m", "api.cli", "worker", "--loglevel", "WARNING"),
            *("--concurrency", str(concurrency)),
        ],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while "execflow worker celery:" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text(errors="replace")[-2000:])
        time.sleep(0.1)
    return proc


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--backends", default="inprocess,celery")
    opts = parser.parse_args()

    from models import migrate
    from models.db import init_database
    from models.settings import Settings, configure
    from orchestrator.celery_app import celery_app, celery_dispatcher
    from orchestrator.celery_app import configure as configure_celery
    from orchestrator.queue import InProcessQueue

    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    url, drop = await _make_database(opts.db, tmp)
    await asyncio.to_thread(migrate.upgrade, url)
    prefix = f"efbench{uuid.uuid4().hex[:8]}"
    settings = Settings(
        data_dir=tmp,
        database_url=url,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        log_format="text",
        log_level="WARNING",
    )
    configure(settings)
    db = init_database(url)
    print(
        f"bench_jobs: db={opts.db} jobs={opts.jobs} latency-jobs={opts.latency_jobs} "
        f"concurrency={opts.concurrency} cpus={os.cpu_count()}"
    )
    results: dict[str, dict[str, float]] = {}
    select_ms, commit_ms = await baseline()
    print(
        f" baseline: {opts.db} SELECT 1 {select_ms:.2f} ms, INSERT+COMMIT {commit_ms:.2f} ms "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    try:
        for backend in opts.backends.split(","):
            proc = None
            queue = None
            if backend == "inprocess":
                queue = InProcessQueue(concurrency=opts.concurrency)
                await queue.start()
            else:
                configure_celery(celery_app, settings)
                jobs.add_job_dispatcher(celery_dispatcher)
                env = {k: v for k, v in os.environ.items() if not k.startswith("EXECFLOW_")}
                env.update(
                    PYTHONPATH=str(ROOT),
                    EXECFLOW_DATA_DIR=str(tmp),
                    EXECFLOW_DATABASE_URL=url,
                    EXECFLOW_REDIS_URL=REDIS_URL,
                    EXECFLOW_REDIS_PREFIX=prefix,
                    EXECFLOW_QUEUE_BACKEND="celery",
                    EXECFLOW_JOB_MODULES="evals.bench_jobs",
                    EXECFLOW_LOG_FORMAT="text",
                    EXECFLOW_LOG_LEVEL="INFO",
                )
                proc = await asyncio.to_thread(
                    _start_worker, env, tmp / "worker.log", opts.concurrency
                )
            try:
                await throughput(20)  # warm up connections and imports
                rate, enqueue_rate = await throughput(opts.jobs)
                lat = await latency(opts.latency_jobs)
            finally:
                if queue is not None:
                    await queue.stop()
                if proc is not None:
                    jobs.remove_job_dispatcher(celery_dispatcher)
                    proc.terminate()
                    proc.wait(timeout=30)
            results[backend] = {
                "jobs_per_s": rate,
                "enqueue_per_s": enqueue_rate,
                "p50_ms": percentile(lat, 50),
                "p99_ms": percentile(lat, 99),
                "mean_ms": statistics.fmean(lat),
            }
            r = results[backend]
            print(
                f"{backend:>9}: {r['jobs_per_s']:7.1f} jobs/s (enqueue alone "
                f"{r['enqueue_per_s']:.1f}/s)   enqueue-to-start "
                f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  (mean {r['mean_ms']:.1f})"
            )
    finally:
        await db.dispose()
        if drop is not None:
            await drop()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


if __name__ == "__main__":
    asyncio.run(main())
