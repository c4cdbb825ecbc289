"""Sentry V figures: probes per second one worker sustains, and schedule jitter at 1,000 sites.

    .venv/bin/python -m evals.bench_sentry [--probes 2000] [--sites 1000] [--seconds 70]

1. Probe throughput against a loopback upstream (a separate process): probe checks alone, and
   the full unit of work (probe + store + incident state machine) on SQLite, at concurrency 1
   (the baseline) and 20 (the scheduler's default).
2. Schedule jitter: ``--sites`` sites at a 60 s interval under the real ``ProbeScheduler`` on the
   real clock for ``--seconds``; jitter = probe start - scheduled time, from the stored results.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from models import migrate
from models.db import init_database, utcnow
from models.sentry import ProbeResult
from models.sites import Site
from tools.sentry.probes import ProbeConfig, probe
from tools.sentry.scheduler import ProbeScheduler, SystemClock, make_client, probe_site

BODY = b"<html><h1>Welcome</h1>" + b"x" * 2000 + b"</html>"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY
)


def _serve(port_queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(RESPONSE)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def start_upstream() -> tuple[multiprocessing.Process, str]:
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    process = multiprocessing.Process(target=_serve, args=(queue,), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{queue.get(timeout=10)}/"


async def _rate(n: int, concurrency: int, work) -> float:  # type: ignore[no-untyped-def]
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with semaphore:
            await work(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


class ShiftedClock(SystemClock):
    """The real clock, moved forward on demand (to make every site due at once)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def now(self) -> dt.datetime:
        return super().now() + self.offset


async def throughput(url: str, n: int, site_ids: list[int]) -> None:
    config = ProbeConfig(url=url, expected_keyword="Welcome")
    for concurrency in (1, 20):
        async with make_client(concurrency=concurrency) as client:

            async def checks_only(_i: int, client=client) -> None:  # type: ignore[no-untyped-def]
                await probe(config, client=client, previous_hash=None, now=utcnow())

            rate = await _rate(n, concurrency, checks_only)
        print(f"probe checks only, concurrency={concurrency:>2}: {rate:7.1f} probes/s")

    async with make_client(concurrency=1) as client:

        async def one_by_one(i: int, client=client) -> None:  # type: ignore[no-untyped-def]
            await probe_site(site_ids[i % len(site_ids)], now=utcnow(), client=client)

        rate = await _rate(n // 4, 1, one_by_one)
    print(f"probe_site one at a time (a transaction each, the baseline): {rate:7.1f} probes/s")

    clock = ShiftedClock()
    scheduler = ProbeScheduler(clock=clock, concurrency=20, seed=2)
    scheduler.start(schedule=False)  # the batch writer only; ticks are driven here
    await scheduler.tick()  # creates the monitors, first probes spread over 60 s
    await scheduler.drain()
    clock.offset = dt.timedelta(seconds=61)  # now every site is due
    started = time.perf_counter()
    count = await scheduler.tick()
    await scheduler.drain()
    elapsed = time.perf_counter() - started
    await scheduler.stop()
    print(
        f"ProbeScheduler worker (claim, probe x20, batched store): {count} sites in "
        f"{elapsed:.1f}s = {count / elapsed:7.1f} probes/s"
    )


async def jitter(url: str, sites: int, seconds: float) -> None:
    url_ = database_url("jitter")
    await asyncio.to_thread(migrate.upgrade, url_)
    database = init_database(url_)
    async with database.session() as session:
        session.add_all(
            Site(name=f"j{i}", url=url, allowlist=[], shield_mode=False, meta={})
            for i in range(sites)
        )
    scheduler = ProbeScheduler(seed=1)
    started = utcnow()
    scheduler.start()
    await asyncio.sleep(seconds)
    await scheduler.stop()
    async with database.session() as session:
        rows = (
            await session.execute(
                select(ProbeResult.ts, ProbeResult.scheduled_for).where(ProbeResult.ts >= started)
            )
        ).all()
    lags = sorted((ts - due).total_seconds() for ts, due in rows if due is not None)
    q = statistics.quantiles(lags, n=100)
    print(
        f"jitter sites={sites} interval=60s run={seconds:.0f}s probes={len(lags)} "
        f"({len(lags) / seconds:.1f}/s): p50 {q[49]:.3f}s p95 {q[94]:.3f}s "
        f"p99 {q[98]:.3f}s max {lags[-1]:.3f}s (goal p95 <= 2 s)"
    )
    await database.dispose()


_TMP = Path(tempfile.mkdtemp(prefix="bench-sentry-"))


def database_url(name: str) -> str:
    url = f"sqlite+aiosqlite:///{_TMP / name}.db"
    return url


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--probes", type=int, default=2000)
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=70)
    args = parser.parse_args()
    process, url = start_upstream()
    try:
        db_url = database_url("throughput")
        await asyncio.to_thread(migrate.upgrade, db_url)
        database = init_database(db_url)
        async with database.session() as session:
            rows = [
                Site(name=f"t{i}", url=url, allowlist=[], shield_mode=False, meta={})
                for i in range(args.probes // 2)
            ]
            session.add_all(rows)
            await session.flush()
            ids = [r.id for r in rows]
        await throughput(url, args.probes, ids)
        await database.dispose()
        await jitter(url, args.sites, args.seconds)
    finally:
        process.terminate()
    print(f"at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {multiprocessing.cpu_count()} CPUs")


if __name__ == "__main__":
    asyncio.run(main())
