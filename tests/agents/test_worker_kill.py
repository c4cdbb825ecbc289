"""A worker process killed mid-task: the task resumes elsewhere and never repeats a side effect.

The child process runs a task with two autonomous quarantine calls and is SIGKILLed while the
second call is in flight. A fresh worker (this process) requeues the orphaned job the way a
restarted pool does, resumes the graph from its persisted checkpoint, and must neither repeat
the completed first call nor re-run the second, whose outcome is unknown.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import update

import orchestrator.tasks as task_service
from models import jobs
from models.agent_tasks import AgentTask
from models.db import session_scope
from models.settings import Settings
from orchestrator.runner import claim, execute
from tests.agents.worker_child import FileBackend
from tests.support.processes import ROOT, execflow_env


async def test_killed_worker_never_repeats_side_effects(
    settings: Settings, database: Any, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    task = await task_service.create_task(
        task="Quarantine 203.0.113.1 and 203.0.113.2 for the next 6 hours",
        actor="test",
        autonomy={"mode": "autonomous", "tools": ["quarantine_target"]},
    )
    env = execflow_env(
        {
            "EXECFLOW_DATABASE_URL": settings.db_url,
            "EXECFLOW_DATA_DIR": str(settings.data_dir),
            "EXECFLOW_SECRET_KEY_PATH": str(settings.secret_key_path),
        }
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.agents.worker_child", str(log), "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if log.exists() and len(log.read_text().splitlines()) >= 2:
                break
            if child.poll() is not None:
                raise AssertionError(child.stdout.read().decode() if child.stdout else "exited")
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the child never reached the second call")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    # What a restarted in-process pool does with jobs its predecessor left running.
    async with session_scope() as s:
        await s.execute(
            update(jobs.Job)
            .where(jobs.Job.status == "running", jobs.Job.worker.like("inprocess:%"))
            .values(status="queued", worker=None)
        )
    task_service.backend_override = FileBackend(str(log))
    try:
        job = await claim(worker="inprocess:test")
        assert job is not None and job.args["task_id"] == task.id
        assert await execute(job) == "succeeded"
    finally:
        task_service.backend_override = None
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    targets = [c["args"]["target"] for c in calls]
    assert targets == ["203.0.113.1", "203.0.113.2"], targets  # each exactly once
    async with session_scope() as s:
        row = await s.get(AgentTask, task.id)
        assert row is not None and row.status == "succeeded"
        steps = await task_service.task_steps(s, task.id)
    second = [
        st
        for st in steps
        if st.kind == "tool_call" and st.args and st.args.get("target") == "203.0.113.2"
    ]
    assert second and second[0].status == "failed" and "not repeated" in str(second[0].result)
    _ = update(AgentTask)
