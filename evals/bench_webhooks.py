"""Event-to-delivery latency of webhooks on loopback.

Each event is a ledger entry carrying its wall-clock creation time; a loopback receiver notes
when the signed POST arrives. Modes:

* ``inprocess``: the dispatcher runs in this process (as inside ``execflow serve``);
* ``worker``: a separate ``execflow webhooks worker`` process dispatches (scale-out shape).

    python -m evals.bench_webhooks --events 100 --rate 5 [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Collector:
    def __init__(self) -> None:
        self.latencies: dict[str, float] = {}
        self.requests = 0
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                event = json.loads(body)
                collector.requests += 1
                sent = event["data"]["params"].get("t0")
                if sent is not None:  # the ledger stores floats as decimal strings
                    with collector.lock:
                        collector.latencies.setdefault(event["id"], (now - float(sent)) * 1000)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_mode(mode: str, args: argparse.Namespace, data_dir: Path, db_url: str) -> dict:
    from models import ledger, migrate
    from models.db import init_database
    from models.settings import Settings, configure
    from tools.webhooks.dispatcher import Dispatcher
    from tools.webhooks.service import create_webhook

    settings = Settings(
        data_dir=data_dir,
        database_url=db_url,
        outbound_allowlist=["127.0.0.1"],
        webhook_poll_seconds=args.poll,
    )
    configure(settings)
    await asyncio.to_thread(migrate.upgrade, settings.db_url)
    db = init_database(settings.db_url)
    collector = Collector()
    async with db.session() as session:
        await create_webhook(session, url=collector.url, events=["command_executed"], actor="bench")
    proc = None
    dispatcher = None
    if mode == "inprocess":
        dispatcher = Dispatcher()
        await dispatcher.start()
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXECFLOW_")}
        env.update(
            PYTHONPATH=str(ROOT),
            EXECFLOW_DATA_DIR=str(data_dir),
            EXECFLOW_DATABASE_URL=settings.db_url,
            EXECFLOW_OUTBOUND_ALLOWLIST="127.0.0.1",
            EXECFLOW_WEBHOOK_POLL_SECONDS=str(args.poll),
            EXECFLOW_LOG_LEVEL=os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING"),
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "api.cli",
            "webhooks",
            "worker",
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("BENCH_WORKER_LOG_LEVEL") else subprocess.DEVNULL,
        )
    # warm up: the dispatcher is ready once a first event has arrived
    await ledger.record("command_executed", actor="bench", params={"warmup": True})
    ready_by = time.monotonic() + 120
    while collector.requests == 0 and time.monotonic() < ready_by:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    started = time.perf_counter()
    for i in range(args.events):
        await ledger.record("command_executed", actor="bench", params={"i": i, "t0": time.time()})
        await asyncio.sleep(1 / args.rate)
    deadline = time.monotonic() + 60
    while len(collector.latencies) < args.events and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    if dispatcher is not None:
        await dispatcher.stop()
    if proc is not None:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
    collector.httpd.shutdown()
    await db.dispose()
    lat = list(collector.latencies.values())
    return {
        "mode": mode,
        "backend": "postgresql" if db_url.startswith("postgresql") else "sqlite",
        "events": args.events,
        "delivered": len(lat),
        "p50_ms": round(statistics.median(lat), 1) if lat else None,
        "p99_ms": round(percentile(lat, 0.99), 1) if lat else None,
        "max_ms": round(max(lat), 1) if lat else None,
        "seconds": round(elapsed, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--poll", type=float, default=0.2, help="dispatcher poll seconds")
    parser.add_argument("--modes", default="inprocess,worker")
    parser.add_argument(
        "--postgres",
        default=None,
        metavar="ADMIN_URL",
        help="run on PostgreSQL: a scratch database is created on this server and dropped",
    )
    args = parser.parse_args()
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp)
            db_url = f"sqlite+aiosqlite:///{data_dir / f'bench-{mode}.db'}"
            name = f"ef_bench_{uuid.uuid4().hex[:10]}"
            if args.postgres:
                await _pg_admin(args.postgres, f'CREATE DATABASE "{name}"')
                db_url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
            try:
                result = await run_mode(mode, args, data_dir, db_url)
            finally:
                if args.postgres:
                    await _pg_admin(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(json.dumps(result))


async def _pg_admin(admin_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
