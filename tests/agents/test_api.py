"""The agents API end to end, on SQLite and PostgreSQL, with the recording tool backend."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
from sqlalchemy import select, update

import orchestrator.tasks as task_service
from agents.toolkit import RecordingBackend
from models.agent_tasks import AgentApproval
from models.db import session_scope
from models.ledger import AuditEntry
from models.servers import Server
from tests.agents.conftest import wait_status
from tests.conftest import auth


async def _key(make_key: Any, scope: str = "write") -> dict[str, str]:
    return auth(await make_key(scope))


async def _post(client: httpx.AsyncClient, h: dict[str, str], **body: Any) -> int:
    r = await client.post("/api/agents/task", json=body, headers=h)
    assert r.status_code == 202, r.text
    data = r.json()
    assert data["success"] is True and data["status"] == "queued"
    return int(data["task_id"])


async def _ledger_actions(task_id: int, *, until: str | None = None) -> list[str]:
    """The task's ledger actions; with ``until``, wait (bounded) for that action to be appended:
    the task's status is written just before its closing ledger entry."""
    for _ in range(100):
        async with session_scope() as s:
            rows = await s.execute(
                select(AuditEntry.action)
                .where(AuditEntry.target == f"agent_task:{task_id}")
                .order_by(AuditEntry.seq)
            )
            actions = list(rows.scalars())
        if until is None or until in actions:
            break
        await asyncio.sleep(0.1)
    return actions


async def test_validation_errors(client: httpx.AsyncClient, make_key: Any) -> None:
    h = await _key(make_key)
    r = await client.post("/api/agents/task", json={"task": "x", "agent_type": "wizard"}, headers=h)
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "agent_type"
    r = await client.post("/api/agents/task", json={"task": "x", "priority": "urgent"}, headers=h)
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "priority"
    r = await client.post("/api/agents/task", json={"task": ""}, headers=h)
    assert r.status_code == 400
    r = await client.post("/api/agents/task", json={"task": "x" * 4001}, headers=h)
    assert r.status_code == 400
    r = await client.post("/api/agents/task", json={"task": "x", "server_id": 999999}, headers=h)
    assert r.status_code == 404
    r = await client.get("/api/agents/tasks/999999", headers=h)
    assert r.status_code == 404


async def test_read_only_task_runs_and_is_recorded(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    h = await _key(make_key)
    task_id = await _post(client, h, task="show open critical incidents")
    body = await wait_status(client, h, task_id, {"succeeded", "failed"})
    task = body["task"]
    assert task["status"] == "succeeded", task
    assert task["agent_type"] == "analysis" and task["route_reason"]
    kinds = [s["kind"] for s in body["steps"]]
    assert kinds[0] == "route" and "tool_call" in kinds and kinds[-1] == "final"
    call = next(s for s in body["steps"] if s["kind"] == "tool_call")
    assert call["tool"] == "list_incidents" and call["status"] == "completed"
    assert call["args"] == {"status": "open", "severity": "critical"}
    assert len(call["result_sha256"]) == 64
    actions = await _ledger_actions(task_id, until="agent_task_completed")
    assert actions[0] == "agent_task_created"
    assert "agent_tool_call" in actions and actions[-1] == "agent_task_completed"
    r = await client.get("/api/agents/tasks?status=succeeded&agent_type=analysis", headers=h)
    assert task_id in [t["id"] for t in r.json()["tasks"]]


async def test_approve(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    h = await _key(make_key)
    before = len(recording.calls)
    task_id = await _post(client, h, task="quarantine 203.0.113.45 for the next 6 hours")
    await wait_status(client, h, task_id, {"awaiting_approval"})
    assert len(recording.calls) == before
    r = await client.get("/api/agents/approvals", headers=h)
    pending = [a for a in r.json()["approvals"] if a["task_id"] == task_id]
    assert len(pending) == 1
    approval = pending[0]
    assert approval["tool"] == "quarantine_target"
    assert approval["args"] == {"target": "203.0.113.45", "duration_hours": 6}
    assert approval["expires_at"]
    read = await _key(make_key, "read")
    r = await client.post(
        f"/api/agents/approvals/{approval['id']}", json={"decision": "approve"}, headers=read
    )
    assert r.status_code == 403
    r = await client.post(
        f"/api/agents/approvals/{approval['id']}",
        json={"decision": "approve", "comment": "ok"},
        headers=h,
    )
    assert r.status_code == 200, r.text
    body = await wait_status(client, h, task_id, {"succeeded", "failed", "rejected"})
    assert body["task"]["status"] == "succeeded"
    calls = [c for c in recording.calls[before:] if c.tool == "quarantine_target"]
    assert len(calls) == 1 and calls[0].args["target"] == "203.0.113.45"
    r = await client.post(
        f"/api/agents/approvals/{approval['id']}", json={"decision": "reject"}, headers=h
    )
    assert r.status_code == 409
    actions = await _ledger_actions(task_id)
    assert {"approval_requested", "approval_decided", "agent_tool_call"} <= set(actions)
    async with session_scope() as s:
        decided = (
            await s.execute(
                select(AuditEntry).where(
                    AuditEntry.action == "approval_decided",
                    AuditEntry.target == f"agent_task:{task_id}",
                )
            )
        ).scalar_one()
    assert decided.actor.startswith("key:") and decided.params["decision"] == "approved"


async def test_reject(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    h = await _key(make_key)
    before = len(recording.calls)
    task_id = await _post(client, h, task="turn off shield mode on the blog")
    body = await wait_status(client, h, task_id, {"awaiting_approval"})
    approval = body["approvals"][0]
    r = await client.post(
        f"/api/agents/approvals/{approval['id']}",
        json={"decision": "reject", "comment": "not now"},
        headers=h,
    )
    assert r.status_code == 200
    body = await wait_status(client, h, task_id, {"rejected", "succeeded", "failed"})
    assert body["task"]["status"] == "rejected"
    assert not [c for c in recording.calls[before:] if c.tool == "set_shield_mode"]


async def test_edit(client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend) -> None:
    h = await _key(make_key)
    before = len(recording.calls)
    task_id = await _post(client, h, task="quarantine 198.51.100.7 permanently")
    body = await wait_status(client, h, task_id, {"awaiting_approval"})
    approval_id = body["approvals"][0]["id"]
    r = await client.post(
        f"/api/agents/approvals/{approval_id}",
        json={"decision": "edit", "args": {"target": 5}},
        headers=h,
    )
    assert r.status_code == 400
    r = await client.post(
        f"/api/agents/approvals/{approval_id}",
        json={"decision": "edit", "args": {"target": "198.51.100.8", "duration_hours": 2}},
        headers=h,
    )
    assert r.status_code == 200, r.text
    await wait_status(client, h, task_id, {"succeeded"})
    calls = [c for c in recording.calls[before:] if c.tool == "quarantine_target"]
    assert [c.args for c in calls] == [{"target": "198.51.100.8", "duration_hours": 2}]


async def test_expiry_rejects(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    h = await _key(make_key)
    before = len(recording.calls)
    task_id = await _post(client, h, task="enable shield mode on shop.example.com")
    body = await wait_status(client, h, task_id, {"awaiting_approval"})
    approval = body["approvals"][0]
    default_ttl = dt.datetime.fromisoformat(approval["expires_at"]) - dt.datetime.fromisoformat(
        body["task"]["created_at"]
    )
    assert dt.timedelta(minutes=14) < default_ttl <= dt.timedelta(minutes=16)
    async with session_scope() as s:
        await s.execute(
            update(AgentApproval)
            .where(AgentApproval.id == approval["id"])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    assert await task_service.expire_approvals() >= 1
    body = await wait_status(client, h, task_id, {"rejected", "succeeded", "failed"})
    assert body["task"]["status"] == "rejected"
    assert body["approvals"][0]["status"] == "expired"
    assert not [c for c in recording.calls[before:] if c.tool == "set_shield_mode"]


async def test_cancel(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    h = await _key(make_key)
    task_id = await _post(client, h, task="release 203.0.113.45")
    await wait_status(client, h, task_id, {"awaiting_approval"})
    r = await client.post(f"/api/agents/tasks/{task_id}/cancel", headers=h)
    assert r.status_code == 200 and r.json()["task"]["status"] == "cancelled"
    body = (await client.get(f"/api/agents/tasks/{task_id}", headers=h)).json()
    assert body["approvals"][0]["status"] == "cancelled"
    r = await client.post(f"/api/agents/tasks/{task_id}/cancel", headers=h)
    assert r.status_code == 409
    r = await client.post("/api/agents/tasks/999999/cancel", headers=h)
    assert r.status_code == 404


async def test_restart_while_awaiting_approval_resumes(
    app: Any, client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    """Workers stop while a task waits; a fresh worker pool resumes it from the checkpoint."""
    from orchestrator.queue import InProcessQueue

    h = await _key(make_key)
    before = len(recording.calls)
    task_id = await _post(client, h, task="restart nginx on prod-web-02")
    body = await wait_status(client, h, task_id, {"awaiting_approval"})
    await app.state.queue.stop()
    r = await client.post(
        f"/api/agents/approvals/{body['approvals'][0]['id']}",
        json={"decision": "approve"},
        headers=h,
    )
    assert r.status_code == 200
    fresh = InProcessQueue(concurrency=2)
    await fresh.start()
    try:
        body = await wait_status(client, h, task_id, {"succeeded", "failed"})
    finally:
        await fresh.stop()
        app.state.queue._stopping = False  # bring the app's own pool back for later tests
        await app.state.queue.start()
    assert body["task"]["status"] == "succeeded"
    calls = [c for c in recording.calls[before:] if c.tool == "run_playbook"]
    assert len(calls) == 1 and calls[0].args["params"] == {"service": "nginx"}, (
        recording.calls[before:],
        body["steps"],
    )


async def test_events_stream(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    h = await _key(make_key, "read")
    w = await _key(make_key)
    task_id = await _post(client, w, task="list all servers")
    await wait_status(client, h, task_id, {"succeeded"})
    async with client.stream("GET", f"/api/agents/tasks/{task_id}/events", headers=h) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = ""
        async for chunk in r.aiter_text():
            text += chunk
    assert "event: step" in text and "event: end" in text and '"status": "succeeded"' in text
    r = await client.get("/api/agents/tasks/999999/events", headers=h)
    assert r.status_code == 404


class _Broken(RecordingBackend):
    async def world(self) -> Any:
        raise RuntimeError("registry offline")


async def test_status_numbers(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    h = await _key(make_key)
    first = (await client.get("/api/agents/status", headers=h)).json()
    assert first["success"] is True and set(first["queue"]) >= {"low", "normal", "high", "critical"}
    done = await _post(client, h, task="show incidents", agent_type="analysis")
    await wait_status(client, h, done, {"succeeded"})
    task_service.backend_override = _Broken()
    try:
        failed = await _post(client, h, task="show threat feed", agent_type="security")
        await wait_status(client, h, failed, {"failed"})
    finally:
        task_service.backend_override = recording
    after = (await client.get("/api/agents/status", headers=h)).json()
    a0, a1 = first["agents"]["analysis"], after["agents"]["analysis"]
    s0, s1 = first["agents"]["security"], after["agents"]["security"]
    assert a1["completed_last_hour"] == a0["completed_last_hour"] + 1
    assert s1["failed_last_hour"] == s0["failed_last_hour"] + 1
    assert s1["last_error"]["task_id"] == failed and "registry offline" in s1["last_error"]["error"]
    assert a1["mean_latency_ms"] is not None and a1["model_available"] is True
    assert after["active_tasks"] >= 0


async def test_server_scope(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    async with session_scope() as s:
        server = Server(name="scope-test-01", host="127.0.0.1")
        s.add(server)
    h = await _key(make_key)
    before = len(recording.calls)
    task_id = await _post(client, h, task="check disk usage", server_id=server.id)
    body = await wait_status(client, h, task_id, {"succeeded", "failed"})
    assert body["task"]["server_id"] == server.id
    calls = [c for c in recording.calls[before:] if c.tool == "execute_command"]
    assert calls and calls[0].args == {"server_id": server.id, "command": "df -h"}


class _Slow(RecordingBackend):
    async def call(
        self, spec: Any, args: dict[str, Any], *, actor: str, request_id: str | None
    ) -> dict[str, Any]:
        import asyncio

        await asyncio.sleep(60)
        return {}


async def test_cancel_running_task(
    client: httpx.AsyncClient, make_key: Any, recording: RecordingBackend
) -> None:
    h = await _key(make_key)
    task_service.backend_override = _Slow()
    try:
        task_id = await _post(client, h, task="show open incidents")
        await wait_status(client, h, task_id, {"running"})
        r = await client.post(f"/api/agents/tasks/{task_id}/cancel", headers=h)
        assert r.status_code == 200
        body = await wait_status(client, h, task_id, {"cancelled"}, timeout=20)
    finally:
        task_service.backend_override = recording
    assert body["task"]["finished_at"]
    import asyncio

    entry = None
    for _ in range(100):  # the ledger entry follows the status change
        async with session_scope() as s:
            entry = (
                await s.execute(
                    select(AuditEntry).where(
                        AuditEntry.action == "agent_task_failed",
                        AuditEntry.target == f"agent_task:{task_id}",
                    )
                )
            ).scalar_one_or_none()
        if entry is not None:
            break
        await asyncio.sleep(0.1)
    assert entry is not None and entry.params["status"] == "cancelled"
