"""Throughput and latency of authenticated, rate-limited GET /api/servers vs a bare route.

Starts, in one run, (a) `execflow serve` on a fresh SQLite data dir with Redis rate limiting on,
and (b) a bare FastAPI app returning the same body, each as one uvicorn process; drives each with
`wrk` (or a small httpx loop when wrk is absent) on loopback and prints requests/s, p50/p99 and
the full stack's share of the bare throughput.

    python -m evals.bench_api [--seconds 10] [--connections 16] [--no-redis]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from tests.support.processes import execflow_env, free_port, run_cli, serve, wait_http

ROOT = Path(__file__).resolve().parents[1]


def _wrk(url: str, key: str | None, seconds: int, connections: int) -> dict[str, float]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if key:
        cmd[1:1] = ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def _httpx(url: str, key: str | None, seconds: int, connections: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0

    async def worker(client: httpx.AsyncClient, until: float) -> None:
        nonlocal errors
        while time.monotonic() < until:
            t0 = time.perf_counter()
            r = await client.get(url)
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += r.status_code != 200

    async def main() -> float:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with httpx.AsyncClient(
            headers=headers, limits=httpx.Limits(max_connections=connections)
        ) as c:
            t0 = time.monotonic()
            await asyncio.gather(*(worker(c, t0 + seconds) for _ in range(connections)))
            return time.monotonic() - t0

    elapsed = asyncio.run(main())
    qs = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": qs[49],
        "p99_ms": qs[98],
        "errors": float(errors),
    }


def measure(url: str, key: str | None, seconds: int, connections: int) -> dict[str, float]:
    load = _wrk if shutil.which("wrk") else _httpx
    load(url, key, 2, connections)  # warm up
    return load(url, key, seconds, connections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--no-redis", action="store_true", help="in-process rate limiting")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-api-"))
    env = {"EXECFLOW_DATA_DIR": str(data), "EXECFLOW_LOG_LEVEL": "WARNING"}
    if not args.no_redis:
        env.update(
            EXECFLOW_REDIS_URL="redis://127.0.0.1:6379/0",
            EXECFLOW_REDIS_PREFIX=f"bench{uuid.uuid4().hex[:6]}",
        )
    # Enterprise key with a rate far above what the load can reach: the limiter runs on every
    # request (and sets headers) but never refuses, so both sides serve the same 200 body.
    created = run_cli(
        "keys",
        "create",
        "--name",
        "bench",
        "--scope",
        "read",
        "--plan",
        "enterprise",
        "--rate",
        "100000000",
        "--burst",
        "100000000",
        env=env,
    )
    if created.returncode != 0:
        sys.exit(created.stderr)
    key = created.stdout.strip().splitlines()[-1]

    with serve(env, "--no-workers") as base:
        full = measure(base + "/api/servers", key, args.seconds, args.connections)

    port = free_port()
    bare_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "evals.bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=execflow_env({}),
        cwd=ROOT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/servers")
        bare = measure(f"http://127.0.0.1:{port}/api/servers", None, args.seconds, args.connections)
    finally:
        bare_proc.terminate()
        bare_proc.wait()

    limiter = "in-process" if args.no_redis else "Redis"
    tool = "wrk" if shutil.which("wrk") else "httpx"
    print(
        f"load: {tool}, {args.connections} connections, {args.seconds}s per side, one uvicorn each"
    )
    for name, r in (("bare FastAPI route", bare), (f"full stack ({limiter} rate limit)", full)):
        print(
            f"{name:<34} {r['rps']:>9.0f} req/s   p50 {r['p50_ms']:6.2f} ms   "
            f"p99 {r['p99_ms']:6.2f} ms   non-2xx {r['errors']:.0f}"
        )
    print(f"full stack / bare throughput: {full['rps'] / bare['rps']:.2f}")


if __name__ == "__main__":
    main()
