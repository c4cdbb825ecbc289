"""The whole cluster, in real processes: two API replicas behind the shipped nginx
configuration, two Celery workers (which also deliver webhooks), one beat, PostgreSQL, Redis,
a VaultShield proxy, two sshd targets, a webhook receiver and an asset server on loopback.

A mixed workload runs in two waves: agent tasks that need approval (some approved, some
rejected, through the API), read-only agent tasks, playbook runs on the sshd targets,
compactions of assets on the asset server, quarantines enforced by the proxy, a beat-fired job
schedule and an agent schedule, with webhook deliveries of every ledger event throughout. Between
the waves the test SIGKILLs the worker that is running a playbook step and one API replica, and
restarts both. Afterwards every task and job is final, and each side effect is counted where it
happened: marker lines on the targets, webhook ids at the receiver, the proxy's answers,
quarantine rows, ledger entries. The per-key rate limit held across both replicas, and
``execflow audit verify`` passes. The checks live in cluster_checks.py, the targets in
cluster_targets.py, the process layout in tests/support/cluster.py (shared with
evals/bench_cluster.py).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import tests.jobs.handlers  # noqa: F401  (test.effect: the job the beat schedule fires)
from models import schedules
from models.agent_tasks import FINAL_TASK_STATES, AgentTask
from models.db import Database, init_database
from models.jobs import Job
from models.settings import Settings
from models.webhooks import WebhookEndpoint
from tests.conftest import REDIS_URL, auth, create_database
from tests.executor.conftest import server_body
from tests.executor.sshd import Keys, SshdFarm
from tests.hardening.cluster_checks import (
    BURST,
    QUARANTINED,
    RATE,
    RELEASED,
    WORKER_CONCURRENCY,
    Setup,
    Workload,
    all_final,
    check_side_effects,
    check_webhooks,
    wait_for,
)
from tests.hardening.cluster_targets import AssetServer, Markers, asset_server, upstream_server
from tests.support.cluster import Cluster, run_cluster
from tests.support.keys import limited_read_key, unlimited_admin_key
from tests.support.nginx import MISSING, NGINX
from tests.support.processes import ROOT, json_log_records, run_cli
from tests.traffic.conftest import shield_process
from tests.webhooks.receiver import Receiver, Step

pytestmark = [pytest.mark.skipif(NGINX is None, reason=MISSING), pytest.mark.timeout(900)]
PLAYBOOKS = ROOT / "tests" / "hardening" / "playbooks"


class Load:
    """Steady authenticated GETs through nginx for the whole run: the rate-limited key (its 429s
    are the shared limiter at work) and the admin key, whose requests must never fail, not even
    while a replica is SIGKILLed (nginx retries idempotent requests on the other replica)."""

    def __init__(self, base: str, limited: str, admin: str) -> None:
        self.base, self.limited, self.admin = base, limited, admin
        self.limited_statuses: list[int] = []
        self.admin_failures: list[str] = []
        self.admin_ok = 0
        self.window: tuple[float, float] = (0.0, 0.0)
        self._stop = asyncio.Event()
        self._random = random.Random()

    async def _limited(self, client: httpx.AsyncClient) -> None:
        first = time.monotonic()
        while not self._stop.is_set():
            r = await client.get("/api/servers", headers=auth(self.limited))
            self.limited_statuses.append(r.status_code)
            self.window = (first, time.monotonic())
            await self._pause()

    async def _admin(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            try:
                r = await client.get("/api/agents/status", headers=auth(self.admin))
                if r.status_code == 200:
                    self.admin_ok += 1
                else:
                    self.admin_failures.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                self.admin_failures.append(repr(exc))
            await self._pause()

    async def _pause(self) -> None:
        # Irregular gaps: two loops at one fixed period can phase-lock with nginx's round robin
        # and send one key's every request to the same replica (seen once in the gate).
        await asyncio.sleep(self._random.uniform(0.05, 0.35))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Load]:
        async with httpx.AsyncClient(base_url=self.base, timeout=60) as client:
            tasks = [
                asyncio.create_task(self._limited(client)),
                asyncio.create_task(self._admin(client)),
            ]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.gather(*tasks)


def _env(tmp: Path, url: str, prefix: str) -> dict[str, str]:
    return {
        "EXECFLOW_DATA_DIR": str(tmp / "data"),
        "EXECFLOW_DATABASE_URL": url,
        "EXECFLOW_REDIS_URL": REDIS_URL,
        "EXECFLOW_REDIS_PREFIX": prefix,
        "EXECFLOW_QUEUE_BACKEND": "celery",
        "EXECFLOW_JOB_LEASE_SECONDS": "5",  # a dead worker's jobs are taken over within ~5 s
        "EXECFLOW_JOB_MODULES": "tests.jobs.handlers",
        "EXECFLOW_PLAYBOOKS_DIR": str(PLAYBOOKS),
        "EXECFLOW_OUTBOUND_ALLOWLIST": "127.0.0.1",
        "EXECFLOW_WEBHOOK_TIMEOUT_SECONDS": "3",
        "EXECFLOW_WEBHOOK_RETRY_SCHEDULE": "0.5,1,2,4,8,8",
        "EXECFLOW_WEBHOOK_RETRY_JITTER": "0",
        "EXECFLOW_VAULTSHIELD_POW_DIFFICULTY": "8",
        "EXECFLOW_LOG_FORMAT": "json",
    }


async def test_whole_cluster(tmp_path: Path) -> None:
    url, drop = await create_database("postgres", tmp_path)
    prefix = f"efcluster{uuid.uuid4().hex[:8]}"
    db = init_database(url)
    try:
        await _run(tmp_path, url, prefix, db)
    finally:
        await db.dispose()
        await drop()
        await _forget_redis(prefix)


async def _forget_redis(prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()  # type: ignore[attr-defined]


async def _run(tmp: Path, url: str, prefix: str, db: Database) -> None:
    admin = await unlimited_admin_key(db)
    limited, limited_id = await limited_read_key(db, rate=RATE, burst=BURST)
    keys = Keys.generate(tmp / "ssh")
    farm = SshdFarm(keys)
    env = _env(tmp, url, prefix)
    with ExitStack() as stack:
        markers = Markers(Path("/tmp") / f"ef-cluster-{uuid.uuid4().hex[:8]}")  # playbooks: /tmp
        stack.callback(shutil.rmtree, markers.directory, ignore_errors=True)
        farm.start(2)
        stack.callback(farm.stop)
        receiver = Receiver()
        stack.callback(receiver.close)
        assets = stack.enter_context(asset_server())
        upstream = stack.enter_context(upstream_server())
        receiver.plan(Step("status", 503), Step("status", 503))  # two first attempts fail
        cluster = stack.enter_context(
            run_cluster(tmp / "cluster", env, worker_concurrency=WORKER_CONCURRENCY)
        )
        async with httpx.AsyncClient(base_url=cluster.base, headers=auth(admin), timeout=60) as api:
            setup = await _setup(api, db, farm, keys, receiver, upstream, markers)
            settings = Settings(data_dir=tmp / "data", database_url=url)
            proxy = stack.enter_context(
                shield_process(settings, site_id=setup.site_id, upstream=upstream, env=env)
            )
            load = Load(cluster.base, limited, admin)
            async with load.running():
                work = await _mixed_workload(api, cluster, db, setup, markers, assets)
            await _stop_schedules(api, db, setup)
            await all_final(db, api, work)
            await check_side_effects(api, db, setup, work, markers, assets, proxy)
            await check_webhooks(db, setup, receiver)
        _check_rate_limit(load, cluster, limited_id)
        verified = run_cli("audit", "verify", env=env, timeout=300)
        assert verified.returncode == 0, verified.stdout + verified.stderr


# -- setting up --------------------------------------------------------------------------------


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201, 202), response.text
    body: dict[str, Any] = response.json()
    return body


async def _setup(
    api: httpx.AsyncClient,
    db: Database,
    farm: SshdFarm,
    keys: Keys,
    receiver: Receiver,
    upstream: str,
    markers: Markers,
) -> Setup:
    servers = []
    for i in range(2):
        body = server_body(farm, keys, i, name=f"cluster-{i}")
        servers.append((_created(await api.post("/api/servers", json=body)))["server"]["id"])
    site = _created(
        await api.post(
            "/api/sites", json={"name": "cluster", "url": upstream, "upstream_url": upstream}
        )
    )
    hook = _created(await api.post("/api/webhooks", json={"url": receiver.url, "events": ["*"]}))
    schedule = _created(
        await api.post(
            "/api/schedules",
            json={"cron": "* * * * *", "task": "list the servers", "agent_type": "analysis"},
        )
    )
    async with db.session() as session:
        fired = await schedules.create_schedule(
            session,
            name="cluster-beat",
            cron="*/2 * * * * *",
            job_name="test.effect",
            args={"effects": str(markers.directory / "beat-effects")},
        )
        start_seq = await session.scalar(
            select(WebhookEndpoint.start_seq).where(WebhookEndpoint.id == hook["webhook"]["id"])
        )
    playbooks = (await api.get("/api/playbooks")).json()["playbooks"]
    return Setup(
        servers=servers,
        site_id=site["site"]["id"],
        webhook_id=hook["webhook"]["id"],
        webhook_secret=hook["secret"],
        webhook_start_seq=int(start_seq or 0),
        agent_schedule=schedule["schedule"]["id"],
        job_schedule=fired["id"],
        playbook_id=next(p["id"] for p in playbooks if p["name"] == "cluster-append"),
    )


# -- the workload ------------------------------------------------------------------------------


async def _task(api: httpx.AsyncClient, text: str) -> int:
    return int((_created(await api.post("/api/agents/task", json={"task": text})))["task_id"])


async def _run_playbook(
    api: httpx.AsyncClient, setup: Setup, markers: Markers, *, server: int, tag: str, gate: Path
) -> int:
    params = {"directory": str(markers.directory), "tag": tag, "gate": str(gate)}
    body = {"server_id": setup.servers[server], "params": params}
    run = _created(await api.post(f"/api/playbooks/{setup.playbook_id}/run", json=body))
    return int(run["run_id"])


async def _wave(
    api: httpx.AsyncClient,
    setup: Setup,
    markers: Markers,
    assets: AssetServer,
    work: Workload,
    label: str,
) -> list[int]:
    """Submit one wave of everything; returns its agent tasks that will need a decision."""
    decided = []
    for i, verdict in enumerate((work.approve, work.approve, work.reject)):
        tag = f"{label}-agent-{i}"
        server = setup.servers[i % 2]
        task = await _task(api, f"run `echo {tag} >> {markers.agent}` on server {server}")
        verdict[task] = tag
        decided.append(task)
    target = f"203.0.113.{len(work.approve) + len(work.reject)}"
    task = await _task(api, f"quarantine {target} permanently")
    (work.approve if label == "one" else work.reject)[task] = target
    decided.append(task)
    work.read_only += [await _task(api, t) for t in ("list the servers", "show open incidents")]
    for i in range(3):
        tag = f"{label}-run-{i}"
        run = await _run_playbook(
            api, setup, markers, server=i % 2, tag=tag, gate=markers.directory
        )
        work.runs[run] = tag
    url = assets.add_image(label, seed=len(work.compactions) + 1)
    body = {"asset_url": url, "quality_target": 100, "format_preference": "png"}
    compaction = _created(await api.post("/api/compact", json=body))
    work.compactions[compaction["compact_id"]] = url.removeprefix(assets.base)
    return decided


async def _decide(api: httpx.AsyncClient, work: Workload, tasks: list[int]) -> None:
    """Approve or reject each task's pending tool call through the API, as its plan says."""
    for task in tasks:

        async def pending(task: int = task) -> int | None:
            body = (await api.get(f"/api/agents/tasks/{task}")).json()
            assert body["task"]["status"] not in FINAL_TASK_STATES, body  # it must ask first
            return next((a["id"] for a in body["approvals"] if a["status"] == "pending"), None)

        approval = await wait_for(pending, f"task {task} awaiting approval")
        decision = "approve" if task in work.approve else "reject"
        r = await api.post(f"/api/agents/approvals/{approval}", json={"decision": decision})
        assert r.status_code == 200, r.text


async def _quarantine(api: httpx.AsyncClient, work: Workload, target: str) -> None:
    body = {"target": target, "reason": "cluster test", "force": True}  # loopback: admin force
    created = _created(await api.post("/api/eshield/quarantine", json=body))
    work.quarantines[target] = created["quarantine"]["id"]


async def _mixed_workload(
    api: httpx.AsyncClient,
    cluster: Cluster,
    db: Database,
    setup: Setup,
    markers: Markers,
    assets: AssetServer,
) -> Workload:
    work = Workload()
    gated = await _run_playbook(api, setup, markers, server=0, tag="gated", gate=markers.gate)
    work.runs[gated] = "gated"
    first = await _wave(api, setup, markers, assets, work, "one")
    await _decide(api, work, first)  # their resumed runs may be in flight during the kill
    for target in (QUARANTINED[0], RELEASED):
        await _quarantine(api, work, target)
    await _kill_and_restart(api, cluster, db, markers, gated)
    markers.gate.touch()
    second = await _wave(api, setup, markers, assets, work, "two")
    await _quarantine(api, work, QUARANTINED[1])
    released = await api.delete(f"/api/eshield/quarantine/{work.quarantines[RELEASED]}")
    assert released.status_code == 200, released.text
    await _decide(api, work, second)
    return work


async def _kill_and_restart(
    api: httpx.AsyncClient, cluster: Cluster, db: Database, markers: Markers, gated_run: int
) -> None:
    """SIGKILL the worker while it runs the gated playbook's second step, and replica 0 while
    the load runs through nginx; then start a fresh worker and replica 0 again on its port."""
    job_id = (await api.get(f"/api/playbooks/runs/{gated_run}")).json()["job_id"]

    async def in_second_step() -> Job | None:
        if not (markers.directory / "gated.waiting").exists():  # seen at the target
            return None
        async with db.session() as session:
            job = await session.get(Job, job_id)
        return job if job is not None and job.status == "running" and job.worker else None

    job = await wait_for(in_second_step, "the gated playbook run in its second step")
    pid = int(str(job.worker).rsplit(":", 1)[1])
    victim = next(w for w in cluster.workers if w.pid == pid)
    await asyncio.to_thread(victim.kill)
    await asyncio.to_thread(cluster.replicas[0].kill)
    cluster.spawn_worker()
    cluster.spawn_replica(0)
    await asyncio.to_thread(cluster.wait_replica, 0)
    await asyncio.to_thread(cluster.workers[-1].wait_log, "execflow worker celery:", 180)


async def _stop_schedules(api: httpx.AsyncClient, db: Database, setup: Setup) -> None:
    """Let each schedule fire at least once, then stop both, so the system can go quiet."""

    async def fired(column: Any, schedule_id: int) -> bool:
        async with db.session() as session:
            return bool(await session.scalar(select(func.count()).where(column == schedule_id)))

    await wait_for(
        lambda: fired(AgentTask.schedule_id, setup.agent_schedule),
        "the agent schedule's first firing (once a minute)",
        timeout=150,
    )
    await wait_for(lambda: fired(Job.schedule_id, setup.job_schedule), "a beat firing")
    r = await api.delete(f"/api/schedules/{setup.agent_schedule}")
    assert r.status_code == 200, r.text
    async with db.session() as session:
        await schedules.update_schedule(session, schedule_id=setup.job_schedule, enabled=False)


def _check_rate_limit(load: Load, cluster: Cluster, key_id: int) -> None:
    """The limited key's successes stayed within its bucket across both replicas; the admin
    key's requests all succeeded; the restarted replica is back in nginx's rotation."""
    statuses = load.limited_statuses
    allowed = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    elapsed = load.window[1] - load.window[0]
    # GCRA shared in Redis: at most the burst plus what the rate refilled (+1 for the refill
    # straddling the first and last request), however nginx spread them over the replicas.
    assert BURST <= allowed <= BURST + int(RATE * elapsed / 60) + 1, (allowed, elapsed)
    assert load.admin_ok > 0 and load.admin_failures == [], load.admin_failures[:5]
    served: dict[int, int] = {}
    for port in cluster.replica_ports:
        logs = (cluster.root / "logs").glob(f"*-replica*-{port}.log")
        served[port] = sum(
            1 for log in logs for r in json_log_records(log) if r.get("key_id") == key_id
        )
    assert all(served.values()), f"the limited key reached one replica only: {served}"
    restarted = cluster.replicas[0].log_path
    assert any(r.get("msg") == "request" for r in json_log_records(restarted)), restarted
