"""Sustained authenticated load on the cluster layout, and agent-task throughput of its workers.

Starts the production layout of docs/deployment.md on loopback (tests/support/cluster.py: two
``execflow serve --no-workers`` replicas behind the shipped nginx configuration, two ``execflow
worker`` processes, one ``execflow beat``, a fresh PostgreSQL database, Redis), then:

1. a baseline: ``wrk`` against replica 0 directly (no nginx), to compare within this run;
2. the load: ``wrk`` through nginx for ``--seconds`` (GET /api/servers and GET /api/agents/tasks
   with an admin key whose limit is never reached), bounded in time and in request count; then
   the baseline again (the machine is shared: the two baselines show how much it drifted);
   each run also records the CPU time the replicas and nginx spent per request;
3. resident memory (VmRSS) of every process (ExecFlow's and nginx's) before and after the load;
4. ``--tasks`` read-only agent tasks ("list the servers", offline local model) submitted at once
   through the API: tasks per minute the two workers complete.

The load generator is Debian's ``wrk`` (``scripts/setup --dev`` installs it): a C event loop
uses a small share of the two cores the cluster itself needs, where a Python generator would
compete with the replicas for them. It runs from a Lua script (the key stays out of the process
list) that stops each thread after ``--max-requests`` / threads requests. Prints figures; the
last line is a JSON summary. Nothing here asserts a timing.

    python -m evals.bench_cluster [--seconds 60] [--connections 16] [--tasks 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from models.agent_tasks import FINAL_TASK_STATES, AgentTask
from models.db import Database, init_database
from tests.conftest import REDIS_URL, create_database
from tests.support.cluster import Cluster, run_cluster
from tests.support.keys import unlimited_admin_key

WRK_SCRIPT = """
local paths = {"/api/servers", "/api/agents/tasks?limit=5"}
local max_requests = %(per_thread)d
local sent, received = 0, 0
wrk.headers["Authorization"] = "Bearer %(key)s"

request = function()
  sent = sent + 1
  return wrk.format("GET", paths[(sent %% #paths) + 1])
end

response = function(status, headers, body)
  received = received + 1
  if received >= max_requests then wrk.thread:stop() end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "max_us": %%d, ' ..
    '"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk(url: str, key: str, *, seconds: int, connections: int, max_requests: int) -> dict:
    """One bounded wrk run; requests/s, latency percentiles and every kind of error."""
    threads = 2
    script = WRK_SCRIPT % {"per_thread": max(1, max_requests // threads), "key": key}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        os.chmod(f.name, 0o600)
        f.write(script)
    try:
        cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        out = subprocess.run(
            [*cmd, "-s", f.name, url], capture_output=True, text=True, timeout=seconds + 60
        )
    finally:
        os.unlink(f.name)
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("{"))
    raw = json.loads(line)
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "requests": raw["requests"],
        "seconds": round(raw["duration_us"] / 1e6, 2),
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "errors": errors,
        "non_2xx": raw["status"],
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def nginx_pids(prefix: Path) -> list[int]:
    """nginx's master (its command line names our prefix) and its workers (its children)."""
    cmdlines = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
    masters = {pid for pid, cmd in cmdlines.items() if b"nginx" in cmd and bytes(prefix) in cmd}
    workers = {pid for pid, cmd in cmdlines.items() if b"nginx" in cmd and _parent(pid) in masters}
    return sorted(masters | workers)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def memory(cluster: Cluster) -> dict[str, int]:
    """RSS in KiB of every process of the layout, by name."""
    named = {name: rss_kib(proc.pid) for name, proc in cluster.processes().items()}
    for i, pid in enumerate(nginx_pids(cluster.root / "nginx")):
        named[f"nginx{i}"] = rss_kib(pid)
    return named


async def agent_throughput(base: str, key: str, db: Database, count: int) -> dict[str, Any]:
    """Submit ``count`` read-only tasks at once; tasks per minute from first submit to last
    completion (so it includes queueing, the graph, the ledger and the database)."""
    headers = {"Authorization": f"Bearer {key}"}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as api:
        submitted = await asyncio.gather(
            *(api.post("/api/agents/task", json={"task": "list the servers"}) for _ in range(count))
        )
    ids = [r.json()["task_id"] for r in submitted]
    deadline = started + max(300.0, count * 10.0)
    while time.monotonic() < deadline:
        async with db.session() as session:
            rows = (
                await session.execute(select(AgentTask.status).where(AgentTask.id.in_(ids)))
            ).scalars()
            statuses = list(rows)
        if all(s in FINAL_TASK_STATES for s in statuses):
            break
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    done = sum(s == "succeeded" for s in statuses)
    return {
        "tasks": count,
        "succeeded": done,
        "not_succeeded": count - done,
        "seconds": round(elapsed, 1),
        "tasks_per_minute": round(done / elapsed * 60, 1),
    }


def growth(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {k: round((after[k] - before[k]) / before[k] * 100, 1) for k in before if k in after}


def print_memory(title: str, before: dict[str, int], after: dict[str, int]) -> None:
    print(f"\n{title}")
    change = growth(before, after)
    for name, kib in before.items():
        end = after.get(name, 0) / 1024
        print(f"  {name:<9} {kib / 1024:8.1f} MiB -> {end:8.1f} MiB  {change.get(name, 0):+6.1f}%")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def bench(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    url, drop = await create_database("postgres", root)
    db = init_database(url)
    prefix = f"efbench{uuid.uuid4().hex[:8]}"
    env = {
        "EXECFLOW_DATA_DIR": str(root / "data"),
        "EXECFLOW_DATABASE_URL": url,
        "EXECFLOW_REDIS_URL": REDIS_URL,
        "EXECFLOW_REDIS_PREFIX": prefix,
        "EXECFLOW_QUEUE_BACKEND": "celery",
        "EXECFLOW_LOG_FORMAT": "json",
        "EXECFLOW_LOG_LEVEL": "WARNING",  # per-request INFO lines would dominate the figures
    }
    try:
        key = await unlimited_admin_key(db, name="bench")
        with run_cluster(root / "cluster", env, worker_concurrency=args.worker_concurrency) as c:
            return await _measure(args, c, key, db)
    finally:
        await db.dispose()
        await drop()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


async def phase(
    cluster: Cluster, url: str, key: str, args: argparse.Namespace, seconds: int
) -> dict[str, Any]:
    """One bounded wrk run, plus the CPU the replicas and nginx spent on it: CPU per request is
    a figure the other tenants of a shared machine distort far less than requests per second."""
    pids = [p.pid for p in cluster.replicas] + nginx_pids(cluster.root / "nginx")
    before = cpu_seconds(pids)
    result = await asyncio.to_thread(
        wrk,
        url,
        key,
        seconds=seconds,
        connections=args.connections,
        max_requests=args.max_requests,
    )
    used = cpu_seconds(pids) - before
    result["server_cpu_seconds"] = round(used, 2)
    result["server_cpu_ms_per_request"] = round(used * 1000 / max(1, result["requests"]), 2)
    return result


async def _measure(args: argparse.Namespace, cluster: Cluster, key: str, db: Database) -> dict:
    direct = f"http://127.0.0.1:{cluster.replica_ports[0]}/"
    print(f"load average at start: {load_average()}")
    warm = await asyncio.to_thread(
        wrk, cluster.base + "/", key, seconds=3, connections=4, max_requests=100_000
    )
    print(f"warm-up through nginx: {warm['requests']} requests, {warm['errors']} errors")
    first = await phase(cluster, direct, key, args, args.baseline_seconds)
    print(f"one replica, direct:   {_line(first)}")
    before = memory(cluster)
    load = await phase(cluster, cluster.base + "/", key, args, args.seconds)
    print(f"two replicas + nginx:  {_line(load)}")
    after = memory(cluster)
    last = await phase(cluster, direct, key, args, args.baseline_seconds)
    print(f"one replica, direct:   {_line(last)}  (again, for drift)")
    print_memory(f"resident memory, before and after the {args.seconds} s load", before, after)
    tasks = await agent_throughput(cluster.base, key, db, args.tasks)
    after_tasks = memory(cluster)
    print(
        f"\nagent tasks (read-only, offline model): {tasks['succeeded']}/{tasks['tasks']} "
        f"succeeded in {tasks['seconds']} s = {tasks['tasks_per_minute']} tasks/min "
        f"on 2 workers x {args.worker_concurrency}"
    )
    print_memory("resident memory, start of load -> after the agent tasks", before, after_tasks)
    print(f"load average at end: {load_average()}")
    baseline_rps = (first["rps"] + last["rps"]) / 2
    baseline_cpu = (first["server_cpu_ms_per_request"] + last["server_cpu_ms_per_request"]) / 2
    return {
        "seconds": args.seconds,
        "connections": args.connections,
        "one_replica_direct_before": first,
        "two_replicas_nginx": load,
        "one_replica_direct_after": last,
        "rps_ratio_vs_one_replica": round(load["rps"] / baseline_rps, 2) if baseline_rps else None,
        "cpu_per_request_ratio_vs_one_replica": round(
            load["server_cpu_ms_per_request"] / baseline_cpu, 2
        )
        if baseline_cpu
        else None,
        "rss_kib_before": before,
        "rss_kib_after_load": after,
        "rss_growth_percent_load": growth(before, after),
        "rss_growth_percent_total_load": _total_growth(before, after),
        "rss_growth_percent_after_tasks": growth(before, after_tasks),
        "agent_tasks": tasks,
        "load_average_end": load_average(),
    }


def _total_growth(before: dict[str, int], after: dict[str, int]) -> float:
    return round((sum(after.values()) - sum(before.values())) / sum(before.values()) * 100, 1)


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
        f"errors {r['errors']}  ({r['requests']} requests in {r['seconds']} s; "
        f"server CPU {r['server_cpu_ms_per_request']} ms/request)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of the load")
    parser.add_argument("--baseline-seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--max-requests", type=int, default=500_000, help="bound per wrk run")
    parser.add_argument("--tasks", type=int, default=60, help="read-only agent tasks")
    parser.add_argument("--worker-concurrency", type=int, default=4)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: scripts/setup --dev installs Debian's wrk")
    with tempfile.TemporaryDirectory(prefix="ef-bench-cluster-") as tmp:
        summary = asyncio.run(bench(args, Path(tmp)))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
