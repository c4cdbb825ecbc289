"""The Celery path: an agent task on real Celery workers (real Redis), the worker running it
SIGKILLed in the middle of its second side effect. Another worker takes the job over when its
lease lapses, resumes the graph from its checkpoint, replays the completed call and does not
re-run the one whose outcome is unknown: each side effect happened exactly once."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

import orchestrator.tasks as task_service
from models import jobs
from models.agent_tasks import AgentTask
from models.db import Database, session_scope
from models.settings import Settings
from tests.jobs.conftest import lines, start_worker, wait_until, worker_env

pytestmark = pytest.mark.timeout(300)


async def test_celery_worker_killed_mid_task_repeats_nothing(
    settings: Settings, database: Database, redis_url: str, tmp_path: Path
) -> None:
    from orchestrator.celery_app import celery_app, celery_dispatcher, configure

    prefix = f"efagentkill{uuid.uuid4().hex[:8]}"
    configure(
        celery_app,
        Settings(
            data_dir=settings.data_dir,
            database_url=settings.db_url,
            redis_url=redis_url,
            redis_prefix=prefix,
            queue_backend="celery",
        ),
    )
    jobs.add_job_dispatcher(celery_dispatcher)
    calls = tmp_path / "calls.jsonl"
    modules = "tests.jobs.handlers,tests.agents.celery_hook"
    first = second = None
    try:
        env = worker_env(
            settings,
            redis_url,
            prefix,
            EXECFLOW_JOB_MODULES=modules,
            EF_AGENT_CALL_LOG=str(calls),
            EF_AGENT_BLOCK_ON="2",
        )
        first = await asyncio.to_thread(start_worker, env, tmp_path / "worker-a.log")
        task = await task_service.create_task(
            task="Quarantine 203.0.113.1 and 203.0.113.2 for the next 6 hours",
            actor="test",
            autonomy={"mode": "autonomous", "tools": ["quarantine_target"]},
        )
        await wait_until(
            lambda: asyncio.sleep(0, len(lines(calls)) >= 2),
            timeout=120,
            what="the second call in flight on worker A",
        )
        await asyncio.to_thread(first.kill)

        env_b = {**env, "EF_AGENT_BLOCK_ON": "0"}
        second = await asyncio.to_thread(start_worker, env_b, tmp_path / "worker-b.log")

        async def finished() -> str | None:
            async with session_scope() as s:
                row = await s.get(AgentTask, task.id)
                assert row is not None
                return row.status if row.status in task_service.FINAL_TASK_STATES else None

        status = await wait_until(finished, timeout=120, what="the task to finish on worker B")
    finally:
        jobs.remove_job_dispatcher(celery_dispatcher)
        for proc in (first, second):
            if proc is not None:
                await asyncio.to_thread(proc.stop)
    assert status == "succeeded"
    targets = [json.loads(line)["args"]["target"] for line in lines(calls)]
    assert targets == ["203.0.113.1", "203.0.113.2"], targets  # each side effect exactly once
    async with session_scope() as s:
        steps = await task_service.task_steps(s, task.id)
        job_id = (await s.get(AgentTask, task.id)).job_id  # type: ignore[union-attr]
        job = await s.get(jobs.Job, job_id)
    assert job is not None and job.attempts >= 2 and (job.worker or "").startswith("celery:")
    unknown = [
        st
        for st in steps
        if st.kind == "tool_call" and st.args and st.args.get("target") == "203.0.113.2"
    ]
    assert unknown and unknown[0].status == "failed" and "not repeated" in str(unknown[0].result)
