"""A real ``execflow serve`` process restarts while a task awaits approval; the new one resumes it.

Uses the real service backend: until the tools modules are merged the quarantine call answers
TOOL_UNAVAILABLE (recorded as a failed call); after merging it runs for real. Either way the
task must resume from the persisted checkpoint and run the approved call exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import auth
from tests.support.processes import run_cli, serve


def _wait(base: str, h: dict[str, str], task_id: int, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/api/agents/tasks/{task_id}", headers=h, timeout=10).json()
        if body.get("task", {}).get("status") in states:
            return body
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} never reached {states}: {body}")


def test_restart_while_awaiting_approval(database_url: str, tmp_path: Path) -> None:
    env = {
        "EXECFLOW_DATA_DIR": str(tmp_path),
        "EXECFLOW_DATABASE_URL": database_url,
        "EXECFLOW_LOG_LEVEL": "WARNING",
    }
    created = run_cli("keys", "create", "--name", "t", "--scope", "admin", env=env)
    assert created.returncode == 0, created.stderr
    h = auth(created.stdout.strip().splitlines()[-1])
    with serve(env) as base:
        r = httpx.post(
            f"{base}/api/agents/task",
            headers=h,
            timeout=10,
            json={"task": "quarantine 203.0.113.45 for the next 6 hours"},
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        body = _wait(base, h, task_id, {"awaiting_approval", "failed"})
        assert body["task"]["status"] == "awaiting_approval", body
        approval_id = body["approvals"][0]["id"]
    with serve(env) as base:
        r = httpx.post(
            f"{base}/api/agents/approvals/{approval_id}",
            headers=h,
            timeout=10,
            json={"decision": "approve"},
        )
        assert r.status_code == 200, r.text
        body = _wait(base, h, task_id, {"succeeded", "failed", "rejected"})
    assert body["task"]["status"] == "succeeded", body
    calls = [s for s in body["steps"] if s["kind"] == "tool_call"]
    assert len(calls) == 1 and calls[0]["tool"] == "quarantine_target"
    assert calls[0]["args"] == {"target": "203.0.113.45", "duration_hours": 6}
    assert calls[0]["status"] in {"completed", "failed"}
    assert body["steps"][-1]["kind"] == "final"
