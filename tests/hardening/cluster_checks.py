"""What the cluster test (test_cluster.py) submitted, and the checks of what came of it.

Each check counts side effects where they happened: marker lines on the sshd targets, webhook
ids at the receiver, fetches at the asset server, the proxy's answers, and rows and ledger
entries in the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func, select

from models.agent_tasks import FINAL_TASK_STATES, AgentTask
from models.db import Database
from models.jobs import Job
from models.ledger import AuditEntry
from models.webhooks import WebhookDelivery
from tests.hardening.cluster_targets import AssetServer, Markers
from tests.traffic.conftest import status_of
from tests.webhooks.receiver import Receiver, verify_fluxcybers

RATE, BURST = 60, 5  # the rate-limited key: one a second, bursts of 5
QUARANTINED, RELEASED, VISITOR = ("127.0.60.1", "127.0.60.2"), "127.0.60.3", "127.0.60.9"
WORKER_CONCURRENCY = 2
DEADLINE = 240.0  # generous: the shared 2-core machine can be very slow


async def wait_for(
    check: Callable[[], Awaitable[Any]], what: str, timeout: float = DEADLINE
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s")
        await asyncio.sleep(0.25)


@dataclass
class Workload:
    """Everything the test submitted, and what it expects of each."""

    approve: dict[int, str] = field(default_factory=dict)  # agent task -> its marker or target
    reject: dict[int, str] = field(default_factory=dict)
    read_only: list[int] = field(default_factory=list)
    runs: dict[int, str] = field(default_factory=dict)  # playbook run -> tag
    compactions: dict[str, str] = field(default_factory=dict)  # compact id -> asset path
    quarantines: dict[str, int] = field(default_factory=dict)  # target -> quarantine id

    @property
    def tasks(self) -> list[int]:
        return [*self.approve, *self.reject, *self.read_only]


@dataclass
class Setup:
    servers: list[int]
    site_id: int
    webhook_id: int
    webhook_secret: str
    webhook_start_seq: int
    agent_schedule: int
    job_schedule: int
    playbook_id: int


async def all_final(db: Database, api: httpx.AsyncClient, work: Workload) -> None:
    """Every agent task, job, playbook run and compaction reaches a final state."""

    async def unfinished() -> list[str]:
        async with db.session() as session:
            tasks = await session.scalars(
                select(AgentTask.id).where(AgentTask.status.not_in(FINAL_TASK_STATES))
            )
            jobs = await session.scalars(
                select(Job.id).where(Job.status.in_(("queued", "running")))
            )
            left = [f"task {t}" for t in tasks] + [f"job {j}" for j in jobs]
        for run in work.runs:
            status = (await api.get(f"/api/playbooks/runs/{run}")).json()["status"]
            left += [f"run {run}"] if status not in ("succeeded", "failed") else []
        for cid in work.compactions:
            status = (await api.get(f"/api/compact/{cid}")).json()["status"]
            left += [f"compaction {cid}"] if status not in ("succeeded", "failed") else []
        return left

    async def quiet() -> bool:
        return not await unfinished()

    try:
        await wait_for(quiet, "every task, job, run and compaction final")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still unfinished: {await unfinished()}") from None


# -- what happened, counted at the targets -------------------------------------------------------


async def _statuses(api: httpx.AsyncClient, tasks: Any) -> dict[int, str]:
    return {t: (await api.get(f"/api/agents/tasks/{t}")).json()["task"]["status"] for t in tasks}


async def _check_agents(api: httpx.AsyncClient, work: Workload, markers: Markers) -> None:
    assert set((await _statuses(api, work.approve)).values()) == {"succeeded"}
    assert set((await _statuses(api, work.reject)).values()) == {"rejected"}
    assert set((await _statuses(api, work.read_only)).values()) == {"succeeded"}
    commands = {t: tag for t, tag in work.approve.items() if "-agent-" in tag}
    # each approved command ran exactly once on its target; no rejected one ran at all
    assert markers.counts(markers.agent) == {tag: 1 for tag in commands.values()}
    listed = (await api.get("/api/eshield/quarantine?status=all&limit=200")).json()
    by_target = [q["target"] for q in listed["quarantines"]]
    for target in [*work.approve.values(), *work.reject.values()]:
        if target.startswith("203.0.113."):
            expected = 1 if target in work.approve.values() else 0
            assert by_target.count(target) == expected, (target, by_target)


# The marker line each step of cluster-append.yaml appends, by (phase, step index).
WRITES = {("step", 0): "start", ("step", 2): "end", ("rollback", 0): "rolled-back"}


def _check_playbooks(runs: dict[int, dict[str, Any]], work: Workload, markers: Markers) -> None:
    """No marker line twice; each line a run's record says ran is there, no other. A run whose
    worker was killed mid-step fails at that step (WORKER_LOST: not repeated) and rolls back;
    the gated run is certain to be one, the others may be."""
    counts = markers.counts(markers.playbook)
    assert set(counts.values()) == {1}, f"a playbook step ran twice: {counts}"
    expected = set()
    for run_id, tag in work.runs.items():
        run = runs[run_id]
        lost = [s for s in run["steps"] if (s.get("error") or {}).get("code") == "WORKER_LOST"]
        if run["status"] == "failed" or tag == "gated":
            assert run["status"] == "failed" and len(lost) == 1, run
        for step in run["steps"]:
            line = WRITES.get((step["phase"], step["index"]))
            if line and step["status"] == "ok":
                expected.add(f"{tag} {line}")
            elif line and step in lost and f"{tag} {line}" in counts:
                expected.add(f"{tag} {line}")  # its outcome is unknown: it may have written
    assert set(counts) == expected, (sorted(counts), sorted(expected))
    gated = runs[next(r for r, tag in work.runs.items() if tag == "gated")]
    assert [s["name"] for s in gated["steps"]] == ["start", "wait for the gate", "start"]
    assert [s["phase"] for s in gated["steps"]] == ["step", "step", "rollback"]
    # only jobs in flight on the killed worker (its concurrency) can have been interrupted
    failed = [r for r, run in runs.items() if run["status"] == "failed"]
    assert len(failed) <= WORKER_CONCURRENCY, failed


async def _check_compactions(
    api: httpx.AsyncClient, db: Database, work: Workload, assets: AssetServer
) -> None:
    for cid, path in work.compactions.items():
        body = (await api.get(f"/api/compact/{cid}")).json()
        assert body["status"] == "succeeded", body
        assert assets.fetches[path] >= 1
        async with db.session() as session:
            created = await session.scalar(
                select(func.count()).where(
                    AuditEntry.action == "compact_created", AuditEntry.target == cid
                )
            )
        assert created == 1, (cid, created)


async def _check_proxy(proxy: str) -> None:
    """The running proxy refuses exactly the clients still quarantined."""
    expected = {**{ip: 403 for ip in QUARANTINED}, RELEASED: 200, VISITOR: 200}

    async def enforced() -> bool:
        return all([await status_of(proxy, ip) == code for ip, code in expected.items()])

    await wait_for(enforced, f"the proxy answering {expected}", timeout=60)


async def _check_schedules(db: Database, setup: Setup, markers: Markers) -> None:
    async with db.session() as session:
        fired = list(
            await session.scalars(select(Job).where(Job.schedule_id == setup.job_schedule))
        )
        scheduled = list(
            await session.scalars(
                select(AgentTask).where(AgentTask.schedule_id == setup.agent_schedule)
            )
        )
    assert fired and {j.status for j in fired} == {"succeeded"}
    # each beat firing is one job, and each job's once-only step ran exactly once
    assert len({j.idempotency_key for j in fired}) == len(fired)
    effects = markers.lines(markers.directory / "beat-effects")
    assert sorted(effects) == sorted(f"job {j.id}" for j in fired), effects
    # the agent schedule fires from every replica's loop; compare-and-set: once per minute
    minutes = [t.created_at.replace(second=0, microsecond=0) for t in scheduled]
    assert scheduled and len(set(minutes)) == len(minutes), minutes
    assert {t.status for t in scheduled} == {"succeeded"}


async def check_side_effects(
    api: httpx.AsyncClient,
    db: Database,
    setup: Setup,
    work: Workload,
    markers: Markers,
    assets: AssetServer,
    proxy: str,
) -> None:
    await _check_agents(api, work, markers)
    runs = {r: (await api.get(f"/api/playbooks/runs/{r}")).json() for r in work.runs}
    _check_playbooks(runs, work, markers)
    await _check_compactions(api, db, work, assets)
    await _check_proxy(proxy)
    await _check_schedules(db, setup, markers)


async def check_webhooks(db: Database, setup: Setup, receiver: Receiver) -> None:
    """Every ledger event after the endpoint's creation arrives at least once, correctly
    signed, every copy of one webhook-id identical, so deduplicating on it gives each event
    exactly once; and the dispatchers fanned each event out once."""
    async with db.session() as session:
        head = int(await session.scalar(select(func.max(AuditEntry.seq))) or 0)
    expected = {f"evt_{seq}" for seq in range(setup.webhook_start_seq + 1, head + 1)}

    async def delivered() -> bool:
        return expected <= receiver.acknowledged_ids()

    await wait_for(delivered, f"{len(expected)} events acknowledged by the receiver")
    copies: dict[str, list[bytes]] = {}
    for record in list(receiver.received):
        assert verify_fluxcybers(setup.webhook_secret, record.headers, record.body)
        copies.setdefault(record.id, []).append(record.body)
    assert all(len(set(bodies)) == 1 for bodies in copies.values())
    seqs = {int(i.removeprefix("evt_")) for i in copies}
    assert min(seqs) > setup.webhook_start_seq, "an event from before the endpoint existed"
    assert any(len(b) > 1 for b in copies.values()), "no event was retried (503s were planned)"
    async with db.session() as session:
        rows = (
            await session.execute(
                select(WebhookDelivery.event_id, func.count())
                .where(WebhookDelivery.endpoint_id == setup.webhook_id)
                .group_by(WebhookDelivery.event_id)
            )
        ).all()
    assert {event for event, _ in rows} >= expected
    assert all(n == 1 for _, n in rows), "an event was fanned out twice"
