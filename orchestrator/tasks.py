"""Agent task lifecycle: create, run as a job, approvals and their expiry, cancel, status.

A task is stored (queued), recorded in the ledger (``agent_task_created``) and enqueued as an
``agent.run_task`` job with the task's priority. The job runs the supervisor graph with a
persistent checkpointer; when a state-changing call waits for approval the job ends and the task
is ``awaiting_approval``. A decision (or expiry, as rejected) enqueues the job again, which
resumes the graph from its checkpoint. Job status is mirrored into the task; cancelling a task
cancels its job (``models.jobs.request_cancel``).

Ledger actions: agent_task_created, agent_tool_call, approval_requested, approval_decided,
agent_task_completed (succeeded, or finished with every change rejected: ``params.status``),
agent_task_failed (failed or cancelled: ``params.status``), as the webhook event list says.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

from langchain_core.messages import AIMessage
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agents.models import make_model
from agents.toolkit import AGENTS, TOOLS, ServiceBackend, ToolBackend, result_hash
from models import jobs, ledger
from models.agent_tasks import (
    AUTONOMY_MODES,
    FINAL_TASK_STATES,
    AgentApproval,
    AgentStep,
    AgentTask,
)
from models.db import get_database, session_scope, utcnow
from models.errors import BadRequest, Conflict, NotFound
from models.servers import get_server
from models.settings import get_settings
from orchestrator.graph import (
    AgentContext,
    ApprovalRecord,
    CallRecord,
    builder,
    initial_state,
    open_checkpointer,
)

log = logging.getLogger("execflow.agents")
JOB_NAME = "agent.run_task"
PRIORITIES = ("low", "normal", "high", "critical")
DECISIONS = ("approve", "reject", "edit")

# Test hook: the backend the job handler uses (None: the real service backend).
backend_override: ToolBackend | None = None


def _backend() -> ToolBackend:
    return backend_override or ServiceBackend()


def validate_autonomy(autonomy: dict[str, Any] | None) -> dict[str, Any]:
    if not autonomy:
        return {"mode": "require_approval"}
    mode = autonomy.get("mode", "require_approval")
    if mode not in AUTONOMY_MODES:
        raise BadRequest(
            f"autonomy.mode must be one of {', '.join(AUTONOMY_MODES)}", fields=["autonomy.mode"]
        )
    names = list(autonomy.get("tools") or [])
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise BadRequest(f"unknown tools {unknown}", fields=["autonomy.tools"])
    return {"mode": mode, "tools": names}


# --- creating and reading tasks ---------------------------------------------------------------


async def create_task(
    *,
    task: str,
    actor: str,
    agent_type: str | None = None,
    priority: str = "normal",
    server_id: int | None = None,
    autonomy: dict[str, Any] | None = None,
    schedule_id: int | None = None,
    request_id: str | None = None,
) -> AgentTask:
    """Store a task (queued), record it, and enqueue its job. Committed before it is enqueued."""
    if not task or not task.strip() or len(task) > 4000:
        raise BadRequest("task must be 1-4000 characters", fields=["task"])
    if agent_type is not None and agent_type not in AGENTS:
        raise BadRequest(f"agent_type must be one of {', '.join(AGENTS)}", fields=["agent_type"])
    if priority not in PRIORITIES:
        raise BadRequest(f"priority must be one of {', '.join(PRIORITIES)}", fields=["priority"])
    policy = validate_autonomy(autonomy)
    settings = get_settings()
    async with session_scope() as session:
        if server_id is not None and await get_server(session, server_id) is None:
            raise NotFound(f"Server {server_id} not found")
        row = AgentTask(
            task=task,
            requested_agent=agent_type,
            agent_type=agent_type,
            route_reason="agent_type requested by the caller" if agent_type else None,
            priority=priority,
            server_id=server_id,
            status="queued",
            autonomy=policy,
            actor=actor,
            schedule_id=schedule_id,
            model_backend=settings.llm_backend,
        )
        session.add(row)
    await ledger.record(
        "agent_task_created",
        actor=actor,
        server_id=server_id,
        target=f"agent_task:{row.id}",
        params={
            "task_id": row.id,
            "agent_type": agent_type,
            "priority": priority,
            "autonomy": policy,
        },
        request_id=request_id,
    )
    await _enqueue(row.id, priority, key=f"agent-task:{row.id}")
    return row


async def _enqueue(task_id: int, priority: str, *, key: str) -> int:
    job_id = await jobs.enqueue(
        JOB_NAME, {"task_id": task_id}, priority=priority, idempotency_key=key
    )
    async with session_scope() as session:
        await session.execute(
            update(AgentTask).where(AgentTask.id == task_id).values(job_id=job_id)
        )
    return job_id


async def get_task(session: AsyncSession, task_id: int) -> AgentTask:
    row = await session.get(AgentTask, task_id)
    if row is None:
        raise NotFound(f"Task {task_id} not found")
    return row


async def list_tasks(
    session: AsyncSession,
    *,
    status: str | None = None,
    agent_type: str | None = None,
    priority: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[AgentTask], int]:
    query = select(AgentTask)
    if status:
        query = query.where(AgentTask.status == status)
    if agent_type:
        query = query.where(AgentTask.agent_type == agent_type)
    if priority:
        query = query.where(AgentTask.priority == priority)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.execute(query.order_by(AgentTask.id.desc()).limit(limit).offset(offset))
    return list(rows.scalars()), int(total)


async def task_steps(session: AsyncSession, task_id: int, after: int = 0) -> list[AgentStep]:
    rows = await session.execute(
        select(AgentStep)
        .where(AgentStep.task_id == task_id, AgentStep.id > after)
        .order_by(AgentStep.id)
    )
    return list(rows.scalars())


async def task_approvals(session: AsyncSession, task_id: int) -> list[AgentApproval]:
    rows = await session.execute(
        select(AgentApproval).where(AgentApproval.task_id == task_id).order_by(AgentApproval.id)
    )
    return list(rows.scalars())


# --- cancel -----------------------------------------------------------------------------------


async def cancel_task(task_id: int, *, actor: str, request_id: str | None = None) -> AgentTask:
    async with session_scope() as session:
        row = await get_task(session, task_id)
        if row.status in FINAL_TASK_STATES:
            raise Conflict(f"Task {task_id} is already {row.status}", code="TASK_FINISHED")
        job = await jobs.request_cancel(session, row.job_id) if row.job_id else None
        if (
            row.status in {"queued", "awaiting_approval"}
            or job is None
            or job.status in (jobs.FINAL_STATES)
        ):
            row.status, row.finished_at = "cancelled", utcnow()
        cancelled_here = row.status == "cancelled"
        await session.execute(
            update(AgentApproval)
            .where(AgentApproval.task_id == task_id, AgentApproval.status == "pending")
            .values(status="cancelled", decided_by=actor, decided_at=utcnow())
        )
    if cancelled_here:  # a running task's handler records its own end when it stops
        await ledger.record(
            "agent_task_failed",
            actor=actor,
            server_id=row.server_id,
            target=f"agent_task:{task_id}",
            params={
                "task_id": task_id,
                "status": "cancelled",
                "agent": row.agent_type,
                "error": "cancelled on request",
            },
            request_id=request_id,
        )
    async with session_scope() as session:
        return await get_task(session, task_id)


# --- approvals --------------------------------------------------------------------------------


async def pending_approvals(session: AsyncSession) -> list[AgentApproval]:
    await expire_approvals()
    rows = await session.execute(
        select(AgentApproval).where(AgentApproval.status == "pending").order_by(AgentApproval.id)
    )
    return list(rows.scalars())


async def decide_approval(
    approval_id: int,
    *,
    decision: str,
    actor: str,
    args: dict[str, Any] | None = None,
    comment: str | None = None,
    request_id: str | None = None,
) -> AgentApproval:
    """Approve, reject or edit a pending call; the decision and who made it go to the ledger."""
    if decision not in DECISIONS:
        raise BadRequest(f"decision must be one of {', '.join(DECISIONS)}", fields=["decision"])
    if decision == "edit" and not isinstance(args, dict):
        raise BadRequest("args (an object) is required when editing", fields=["args"])
    async with session_scope() as session:
        row = await session.get(AgentApproval, approval_id)
        if row is None:
            raise NotFound(f"Approval {approval_id} not found")
        if row.status != "pending":
            raise Conflict(
                f"Approval {approval_id} is already {row.status}", code="APPROVAL_DECIDED"
            )
        if row.expires_at <= utcnow():
            row.status, row.decided_by, row.decided_at = "expired", "system:expiry", utcnow()
            expired = True
        else:
            expired = False
            if decision == "edit":
                spec = TOOLS[row.tool]
                row.decision_args = spec.validate(dict(args or {}))
            row.status = {"approve": "approved", "reject": "rejected", "edit": "edited"}[decision]
            row.comment = comment
            row.decided_by = actor
            row.decided_at = utcnow()
        task = await session.get(AgentTask, row.task_id)
        assert task is not None
    await _record_decision(row, task, request_id=request_id)
    if expired:
        await _resume_if_decided(row.task_id, task.priority)
        raise Conflict(f"Approval {approval_id} expired", code="APPROVAL_EXPIRED")
    await _resume_if_decided(row.task_id, task.priority)
    return row


async def _record_decision(row: AgentApproval, task: AgentTask, *, request_id: str | None) -> None:
    await ledger.record(
        "approval_decided",
        actor=row.decided_by or "system",
        server_id=task.server_id,
        target=f"agent_task:{row.task_id}",
        params={
            "approval_id": row.id,
            "task_id": row.task_id,
            "tool": row.tool,
            "decision": row.status,
            "args": row.decision_args if row.status == "edited" else row.args,
            "comment": row.comment,
        },
        request_id=request_id,
    )


async def _resume_if_decided(task_id: int, priority: str) -> None:
    async with session_scope() as session:
        pending = await session.scalar(
            select(func.count()).where(
                AgentApproval.task_id == task_id, AgentApproval.status == "pending"
            )
        )
        task = await session.get(AgentTask, task_id)
        decided = await session.scalar(
            select(func.max(AgentApproval.id)).where(AgentApproval.task_id == task_id)
        )
    if pending or task is None or task.status != "awaiting_approval":
        return
    await _enqueue(task_id, priority, key=f"agent-task:{task_id}:resume:{decided}")


async def expire_approvals(now: dt.datetime | None = None) -> int:
    """Pending approvals past their deadline become ``expired`` (a rejection); tasks resume."""
    now = now or utcnow()
    async with session_scope() as session:
        rows = list(
            (
                await session.execute(
                    select(AgentApproval).where(
                        AgentApproval.status == "pending", AgentApproval.expires_at <= now
                    )
                )
            ).scalars()
        )
        for row in rows:
            row.status, row.decided_by, row.decided_at = "expired", "system:expiry", now
            row.comment = "expired without a decision"
        tasks = {r.task_id: await session.get(AgentTask, r.task_id) for r in rows}
    for row in rows:
        task = tasks[row.task_id]
        assert task is not None
        await _record_decision(row, task, request_id=None)
    for task_id, task in tasks.items():
        assert task is not None
        await _resume_if_decided(task_id, task.priority)
    return len(rows)


# --- the store the graph records into ----------------------------------------------------------


class TaskRecorder:
    """Writes steps, tool calls (with ledger entries) and approvals to the database."""

    def __init__(self, *, actor: str, server_id: int | None) -> None:
        self.actor = actor
        self.server_id = server_id

    async def route(self, task_id: int, agent: str, reason: str) -> None:
        async with session_scope() as session:
            await session.execute(
                update(AgentTask)
                .where(AgentTask.id == task_id)
                .values(agent_type=agent, route_reason=reason)
            )
            session.add(AgentStep(task_id=task_id, kind="route", agent=agent, content=reason))

    async def message(self, task_id: int, agent: str, message: AIMessage) -> None:
        calls = [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in message.tool_calls]
        async with session_scope() as session:
            session.add(
                AgentStep(
                    task_id=task_id,
                    kind="message",
                    agent=agent,
                    content=str(message.content or ""),
                    args={"tool_calls": calls} if calls else None,
                )
            )

    async def get_call(self, key: str) -> CallRecord | None:
        async with session_scope() as session:
            row = await session.scalar(select(AgentStep).where(AgentStep.idempotency_key == key))
        if row is None:
            return None
        return CallRecord(row.status or "started", row.result)

    async def call_started(
        self, key: str, *, task_id: int, agent: str, tool: str, call_id: str, args: dict[str, Any]
    ) -> bool:
        try:
            async with session_scope() as session:
                session.add(
                    AgentStep(
                        task_id=task_id,
                        kind="tool_call",
                        agent=agent,
                        tool=tool,
                        call_id=call_id,
                        idempotency_key=key,
                        status="started",
                        args=args,
                    )
                )
        except IntegrityError:
            return False  # another attempt holds (or held) this call
        return True

    async def call_finished(
        self,
        key: str,
        *,
        task_id: int,
        agent: str,
        tool: str,
        args: dict[str, Any],
        status: str,
        result: dict[str, Any],
    ) -> None:
        digest = result_hash(result)
        async with session_scope() as session:
            row = await session.scalar(select(AgentStep).where(AgentStep.idempotency_key == key))
            if row is None:
                row = AgentStep(
                    task_id=task_id,
                    kind="tool_call",
                    agent=agent,
                    tool=tool,
                    call_id=key.rsplit(":", 1)[-1],
                    idempotency_key=key,
                )
                session.add(row)
            row.args, row.status, row.result = args, status, ledger.redact(result)
            row.result_sha256, row.finished_at = digest, utcnow()
        await ledger.record(
            "agent_tool_call",
            actor=f"agent:{agent}",
            server_id=args.get("server_id") if isinstance(args.get("server_id"), int) else None,
            target=f"agent_task:{task_id}",
            params={
                "task_id": task_id,
                "agent": agent,
                "tool": tool,
                "args": args,
                "status": status,
                "on_behalf_of": self.actor,
            },
            result={"sha256": digest},
        )

    async def request_approval(
        self, *, task_id: int, call_id: str, agent: str, tool: str, args: dict[str, Any]
    ) -> ApprovalRecord:
        async with session_scope() as session:
            row = await session.scalar(
                select(AgentApproval).where(
                    AgentApproval.task_id == task_id, AgentApproval.call_id == call_id
                )
            )
        if row is None:
            ttl = get_settings().agent_approval_ttl_seconds
            row = AgentApproval(
                task_id=task_id,
                call_id=call_id,
                agent=agent,
                tool=tool,
                args=args,
                status="pending",
                expires_at=utcnow() + dt.timedelta(seconds=ttl),
            )
            try:
                async with session_scope() as session:
                    session.add(row)
                    session.add(
                        AgentStep(
                            task_id=task_id,
                            kind="approval",
                            agent=agent,
                            tool=tool,
                            call_id=call_id,
                            status="pending",
                            args=args,
                        )
                    )
            except IntegrityError:
                return await self.request_approval(
                    task_id=task_id, call_id=call_id, agent=agent, tool=tool, args=args
                )
            await ledger.record(
                "approval_requested",
                actor=f"agent:{agent}",
                server_id=args.get("server_id") if isinstance(args.get("server_id"), int) else None,
                target=f"agent_task:{task_id}",
                params={
                    "approval_id": row.id,
                    "task_id": task_id,
                    "tool": tool,
                    "args": args,
                    "expires_at": row.expires_at.isoformat(),
                },
            )
        return _approval_record(row)

    async def approval_state(self, approval_id: int) -> ApprovalRecord:
        async with session_scope() as session:
            row = await session.get(AgentApproval, approval_id)
        assert row is not None
        return _approval_record(row)

    async def approval_for(self, task_id: int, call_id: str) -> ApprovalRecord | None:
        async with session_scope() as session:
            row = await session.scalar(
                select(AgentApproval).where(
                    AgentApproval.task_id == task_id, AgentApproval.call_id == call_id
                )
            )
        return None if row is None else _approval_record(row)


def _approval_record(row: AgentApproval) -> ApprovalRecord:
    return ApprovalRecord(
        id=row.id,
        status=row.status,
        args=dict(row.args or {}),
        decision_args=row.decision_args,
        comment=row.comment,
        expires_at=row.expires_at.isoformat(),
    )


# --- the job ----------------------------------------------------------------------------------


async def _set_task(task_id: int, **values: Any) -> None:
    async with session_scope() as session:
        await session.execute(update(AgentTask).where(AgentTask.id == task_id).values(**values))


async def _step(task_id: int, kind: str, content: str, agent: str | None = None) -> None:
    async with session_scope() as session:
        session.add(AgentStep(task_id=task_id, kind=kind, agent=agent, content=content))


@jobs.job_handler(JOB_NAME)
async def run_task_job(ctx: jobs.JobContext, task_id: int) -> dict[str, Any]:
    """Run (or resume) one task's graph until it finishes or waits for a decision."""
    async with session_scope() as session:
        task = await session.get(AgentTask, task_id)
    if task is None:
        return {"status": "missing"}
    if task.status in FINAL_TASK_STATES:
        return {"status": task.status}
    if not await _claim(task_id, ctx.job_id, task.started_at):
        return {"status": "skipped", "reason": "another job is running this task"}
    settings = get_settings()
    backend = _backend()
    try:
        world = await backend.world()
        context = AgentContext(
            model=make_model(task.model_backend, world),
            backend=backend,
            recorder=TaskRecorder(actor=task.actor, server_id=task.server_id),
            actor=f"agent-task:{task_id}",
            autonomy=dict(task.autonomy or {}),
            max_tool_steps=settings.agent_max_steps,
        )
        config: Any = {"configurable": {"thread_id": f"agent-task-{task_id}"}}
        async with open_checkpointer(settings) as saver:
            compiled = builder.compile(checkpointer=saver)
            snapshot = await compiled.aget_state(config)
            if snapshot.interrupts:
                from langgraph.types import Command

                inp: Any = Command(resume={"decided": True})
            elif snapshot.next:
                inp = None  # a worker stopped mid-run: continue from the last checkpoint
            elif snapshot.values:
                inp = None
            else:
                inp = initial_state(
                    task_id=task_id,
                    task=task.task,
                    server_id=task.server_id,
                    requested_agent=task.requested_agent,
                )
            if inp is not None or snapshot.next:
                await compiled.ainvoke(inp, config, context=context)
            snapshot = await compiled.aget_state(config)
    except asyncio.CancelledError:
        # Shielded: the runner may cancel again while we record the end.
        await asyncio.shield(_finish_task(task_id, "cancelled", error="cancelled on request"))
        raise
    except Exception as exc:
        log.warning("agent task %s failed: %s", task_id, exc)
        await _step(task_id, "error", str(exc) or type(exc).__name__)
        await _finish_task(task_id, "failed", error=str(exc) or type(exc).__name__)
        raise
    if snapshot.interrupts:
        await _set_task(task_id, status="awaiting_approval")
        # A decision may have landed while we were saving the checkpoint.
        async with session_scope() as session:
            task_row = await session.get(AgentTask, task_id)
        await _resume_if_decided(task_id, task_row.priority if task_row else "normal")
        return {"status": "awaiting_approval"}
    final = str(snapshot.values.get("final") or "")
    status = await _outcome(task_id)
    await _step(task_id, "final", final, agent=snapshot.values.get("agent"))
    await _finish_task(task_id, status, final=final)
    return {"status": status}


async def _claim(task_id: int, job_id: int, started_at: dt.datetime | None) -> bool:
    """Atomically make this job the task's runner: one runner per task, even on redelivery.

    A task is claimable when queued or awaiting approval, or when it is running under this very
    job (a redelivery after a worker died). A second job for a task already running is skipped.
    """
    async with session_scope() as session:
        claimed = await session.execute(
            update(AgentTask)
            .where(
                AgentTask.id == task_id,
                (AgentTask.status.in_(("queued", "awaiting_approval")))
                | ((AgentTask.status == "running") & (AgentTask.job_id == job_id)),
            )
            .values(status="running", job_id=job_id, started_at=started_at or utcnow())
        )
        return bool(claimed.rowcount)  # type: ignore[attr-defined]


async def _outcome(task_id: int) -> str:
    """succeeded, unless every state-changing call asked for was refused (then rejected)."""
    async with session_scope() as session:
        approvals = await task_approvals(session, task_id)
    if approvals and all(a.status in {"rejected", "expired", "cancelled"} for a in approvals):
        return "rejected"
    return "succeeded"


async def _finish_task(
    task_id: int, status: str, *, final: str | None = None, error: str | None = None
) -> None:
    async with session_scope() as session:
        task = await session.get(AgentTask, task_id)
        if task is None or task.status in FINAL_TASK_STATES:
            return
        task.status, task.finished_at = status, utcnow()
        if final is not None:
            task.final_answer = final
        if error is not None:
            task.error = error
    action = {
        "succeeded": "agent_task_completed",
        "rejected": "agent_task_completed",
        "failed": "agent_task_failed",
        "cancelled": "agent_task_failed",
    }[status]
    await ledger.record(
        action,
        actor=f"agent-task:{task_id}",
        server_id=task.server_id,
        target=f"agent_task:{task_id}",
        params={"task_id": task_id, "status": status, "agent": task.agent_type, "error": error},
    )


# --- status -----------------------------------------------------------------------------------


async def agent_status(session: AsyncSession) -> dict[str, Any]:
    """Queue size per priority, active tasks, and per-agent figures over the last hour."""
    queue = {p: 0 for p in PRIORITIES}
    rows = await session.execute(
        select(jobs.Job.priority, func.count())
        .where(jobs.Job.name == JOB_NAME, jobs.Job.status == "queued")
        .group_by(jobs.Job.priority)
    )
    for priority, count in rows:
        queue[jobs.PRIORITY_NAMES.get(priority, "normal")] += int(count)
    active_rows = await session.execute(
        select(AgentTask.status, func.count())
        .where(AgentTask.status.in_(("queued", "running", "awaiting_approval")))
        .group_by(AgentTask.status)
    )
    active = {status: int(count) for status, count in active_rows}
    since = utcnow() - dt.timedelta(hours=1)
    finished = (
        await session.execute(
            select(AgentTask).where(
                AgentTask.finished_at >= since, AgentTask.agent_type.is_not(None)
            )
        )
    ).scalars()
    per: dict[str, dict[str, Any]] = {
        a: {
            "completed_last_hour": 0,
            "failed_last_hour": 0,
            "mean_latency_ms": None,
            "last_error": None,
        }
        for a in AGENTS
    }
    latencies: dict[str, list[float]] = {a: [] for a in AGENTS}
    for task in finished:
        if task.agent_type not in per:
            continue
        entry = per[task.agent_type]
        if task.status in {"succeeded", "rejected"}:
            entry["completed_last_hour"] += 1
        elif task.status == "failed":
            entry["failed_last_hour"] += 1
        if task.finished_at and task.status in {"succeeded", "rejected", "failed"}:
            latencies[task.agent_type].append(
                (task.finished_at - task.created_at).total_seconds() * 1000
            )
    for agent in AGENTS:
        if latencies[agent]:
            per[agent]["mean_latency_ms"] = round(sum(latencies[agent]) / len(latencies[agent]), 1)
        last = await session.scalar(
            select(AgentTask)
            .where(AgentTask.agent_type == agent, AgentTask.status == "failed")
            .order_by(AgentTask.finished_at.desc())
            .limit(1)
        )
        if last is not None:
            per[agent]["last_error"] = {
                "task_id": last.id,
                "error": last.error,
                "at": last.finished_at,
            }
    backend_ok, backend_name = await model_backend_answers()
    for agent in AGENTS:
        per[agent]["model_backend"] = backend_name
        per[agent]["model_available"] = backend_ok
    return {
        "queue": {**queue, "total": sum(queue.values())},
        "active_tasks": sum(active.values()),
        "active_by_status": active,
        "agents": per,
    }


_backend_probe: tuple[float, bool] | None = None


async def model_backend_answers() -> tuple[bool, str]:
    """Whether the configured model backend answers (cached for 30 s)."""
    global _backend_probe
    settings = get_settings()
    if settings.llm_backend == "local":
        return True, "local"
    now = time.monotonic()
    if _backend_probe is not None and now - _backend_probe[0] < 30:
        return _backend_probe[1], "openai"
    from agents.models import OpenAIChatModel
    from agents.toolkit import World

    try:
        model = make_model("openai", World())
        ok = await model.ping() if isinstance(model, OpenAIChatModel) else False
    except Exception:
        ok = False
    _backend_probe = (now, ok)
    return ok, "openai"


def database_ready() -> bool:
    try:
        get_database()
    except RuntimeError:
        return False
    return True
