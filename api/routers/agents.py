"""Agent orchestration: dispatch tasks, follow them, decide approvals, queue status."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

import orchestrator.tasks as tasks_service
from api.background import periodically
from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import MAX_ID, Ok, id_path
from models.agent_tasks import FINAL_TASK_STATES, TASK_STATES, AgentApproval, AgentStep, AgentTask
from models.db import session_scope

router = make_router(tags=["agents"])
log = logging.getLogger("execflow.agents")
STREAM: dict[str, Any] = {"x-scope": "read", "x-stream": True}


class Autonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["require_approval", "dry_run_only", "autonomous"] = "require_approval"
    tools: list[str] = Field(default_factory=list, max_length=50)


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=4000)
    agent_type: Literal["security", "remediation", "analysis"] | None = None
    priority: Literal["low", "normal", "high", "critical"] = "normal"
    server_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    autonomy: Autonomy | None = None


class TaskSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    task: str
    status: str
    agent_type: str | None
    route_reason: str | None
    priority: str
    server_id: int | None
    autonomy: dict[str, Any]
    job_id: int | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    final_answer: str | None
    error: str | None


class StepRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    agent: str | None
    tool: str | None
    call_id: str | None
    status: str | None
    content: str | None
    args: dict[str, Any] | None
    result: dict[str, Any] | None
    result_sha256: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class ApprovalRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    task_id: int
    tool: str
    args: dict[str, Any]
    status: str
    expires_at: dt.datetime
    agent: str
    decision_args: dict[str, Any] | None = None
    comment: str | None = None
    decided_by: str | None = None
    decided_at: dt.datetime | None = None


class TaskAccepted(Ok):
    task_id: int
    status: str
    agent_type: str | None
    priority: str


class TaskDetail(Ok):
    task: TaskSummary
    steps: list[StepRead]
    approvals: list[ApprovalRead]


class TaskList(Ok):
    tasks: list[TaskSummary]
    total: int


class TaskCancelled(Ok):
    task: TaskSummary


class ApprovalList(Ok):
    approvals: list[ApprovalRead]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject", "edit"]
    args: dict[str, Any] | None = None
    comment: str | None = Field(default=None, max_length=2000)


class ApprovalDecided(Ok):
    approval: ApprovalRead


class AgentStatus(Ok):
    queue: dict[str, int]
    active_tasks: int
    active_by_status: dict[str, int]
    agents: dict[str, dict[str, Any]]


@router.post("/agents/task", status_code=202, response_model=TaskAccepted)
async def create_task(body: TaskCreate, key: CurrentKey, request_id: RequestId) -> TaskAccepted:
    """Dispatch a task to an agent (auto-selected unless agent_type is given)."""
    row = await tasks_service.create_task(
        task=body.task,
        actor=key.actor,
        agent_type=body.agent_type,
        priority=body.priority,
        server_id=body.server_id,
        autonomy=body.autonomy.model_dump() if body.autonomy else None,
        request_id=request_id,
    )
    return TaskAccepted(
        task_id=row.id, status="queued", agent_type=row.agent_type, priority=row.priority
    )


@router.get("/agents/tasks", response_model=TaskList)
async def list_tasks(
    session: SessionDep,
    status: Literal[TASK_STATES] | None = Query(default=None),  # type: ignore[valid-type]
    agent_type: Literal["security", "remediation", "analysis"] | None = None,
    priority: Literal["low", "normal", "high", "critical"] | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_ID),
) -> TaskList:
    """Tasks, newest first, filtered by status, agent and priority."""
    rows, total = await tasks_service.list_tasks(
        session,
        status=status,
        agent_type=agent_type,
        priority=priority,
        limit=limit,
        offset=offset,
    )
    return TaskList(tasks=[TaskSummary.model_validate(r) for r in rows], total=total)


@router.get("/agents/tasks/{task_id}", response_model=TaskDetail)
async def get_task(session: SessionDep, task_id: int = id_path()) -> TaskDetail:
    """A task with its chosen agent and why, every step, approvals and the final answer."""
    row = await tasks_service.get_task(session, task_id)
    steps = await tasks_service.task_steps(session, task_id)
    approvals = await tasks_service.task_approvals(session, task_id)
    return TaskDetail(
        task=TaskSummary.model_validate(row),
        steps=[StepRead.model_validate(s) for s in steps],
        approvals=[ApprovalRead.model_validate(a) for a in approvals],
    )


@router.post("/agents/tasks/{task_id}/cancel", response_model=TaskCancelled)
async def cancel_task(
    key: CurrentKey, request_id: RequestId, task_id: int = id_path()
) -> TaskCancelled:
    """Cancel a queued, running or waiting task."""
    row = await tasks_service.cancel_task(task_id, actor=key.actor, request_id=request_id)
    return TaskCancelled(task=TaskSummary.model_validate(row))


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


@router.get("/agents/tasks/{task_id}/events", openapi_extra=STREAM)
async def task_events(
    request: Request,
    session: SessionDep,
    task_id: int = id_path(),
    after: int = Query(default=0, ge=0, le=MAX_ID, description="Resume after this step id"),
) -> StreamingResponse:
    """Server-Sent Events: each step as it happens, status changes, then ``end``."""
    await tasks_service.get_task(session, task_id)
    last_id = after
    header = request.headers.get("last-event-id")
    if header and header.isdigit():
        last_id = max(last_id, int(header))

    async def stream() -> AsyncIterator[str]:
        nonlocal last_id
        last_status = None
        idle = 0
        while idle < 36000:  # bounded: at most ~3 hours of polling
            async with session_scope() as s:
                task = await s.get(AgentTask, task_id)
                steps = await tasks_service.task_steps(s, task_id, after=last_id)
            if task is None:
                return
            for step in steps:
                last_id = step.id
                yield _sse("step", StepRead.model_validate(step).model_dump(mode="json"), step.id)
            if task.status != last_status:
                last_status = task.status
                yield _sse("status", {"task_id": task_id, "status": task.status})
            if task.status in FINAL_TASK_STATES and not steps:
                yield _sse("end", {"task_id": task_id, "status": task.status})
                return
            if await request.is_disconnected():
                return
            idle += 1
            await asyncio.sleep(0.3)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/agents/approvals", response_model=ApprovalList)
async def list_approvals(session: SessionDep) -> ApprovalList:
    """Pending approvals (expired ones are rejected first)."""
    rows = await tasks_service.pending_approvals(session)
    return ApprovalList(approvals=[ApprovalRead.model_validate(r) for r in rows])


@router.get("/agents/approvals/{approval_id}", response_model=ApprovalDecided)
async def get_approval(session: SessionDep, approval_id: int = id_path()) -> ApprovalDecided:
    """One approval, pending or decided."""
    row = await session.get(AgentApproval, approval_id)
    if row is None:
        from models.errors import NotFound

        raise NotFound(f"Approval {approval_id} not found")
    return ApprovalDecided(approval=ApprovalRead.model_validate(row))


@router.post("/agents/approvals/{approval_id}", response_model=ApprovalDecided)
async def decide(
    body: Decision, key: CurrentKey, request_id: RequestId, approval_id: int = id_path()
) -> ApprovalDecided:
    """Approve, reject or edit (with args) a pending call."""
    row = await tasks_service.decide_approval(
        approval_id,
        decision=body.decision,
        actor=key.actor,
        args=body.args,
        comment=body.comment,
        request_id=request_id,
    )
    return ApprovalDecided(approval=ApprovalRead.model_validate(row))


@router.get("/agents/status", response_model=AgentStatus)
async def status(session: SessionDep) -> AgentStatus:
    """Queue size per priority, active tasks, and per-agent health."""
    return AgentStatus(**await tasks_service.agent_status(session))


_ = AgentStep  # steps are read through the service


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Expire pending approvals (as rejected) every few seconds while the API runs."""
    async with periodically(tasks_service.expire_approvals, 5, what="expiring approvals"):
        yield
