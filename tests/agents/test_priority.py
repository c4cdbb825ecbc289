"""Tasks are jobs: their priority orders the queue, and a queued task cancels through its job."""

from __future__ import annotations

from typing import Any

from models import jobs
from models.db import session_scope
from orchestrator import tasks
from orchestrator.runner import claim


async def test_priority_orders_claims(database: Any) -> None:
    low = await tasks.create_task(task="list servers", actor="t", priority="low")
    crit = await tasks.create_task(task="list servers", actor="t", priority="critical")
    normal = await tasks.create_task(task="list servers", actor="t")
    order = []
    for _ in range(3):
        job = await claim(worker="test")
        assert job is not None
        order.append(job.args["task_id"])
    assert order == [crit.id, normal.id, low.id]


async def test_cancel_queued_task_cancels_its_job(database: Any) -> None:
    task = await tasks.create_task(task="list servers", actor="t", priority="high")
    cancelled = await tasks.cancel_task(task.id, actor="t")
    assert cancelled.status == "cancelled"
    async with session_scope() as s:
        job = await jobs.get_job(s, int(task.job_id or cancelled.job_id or 0))
    assert job is not None and job.status == "cancelled"
