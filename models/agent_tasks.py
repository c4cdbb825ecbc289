"""Agent tasks: the task record, its steps, approvals, and agent schedules.

The orchestrator owns the lifecycle (orchestrator/tasks.py); this module is the storage only.
A task's steps are an append-only list (routing, model messages, tool calls and results,
approvals, the final answer) that the event stream reads by ``id``. A tool call's row carries
its idempotency key (``task:<id>:<call_id>``) so a resumed task replays a completed call's stored
result instead of running it again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, utcnow

TASK_STATES = (
    "queued",
    "running",
    "awaiting_approval",
    "succeeded",
    "failed",
    "rejected",
    "cancelled",
)
FINAL_TASK_STATES = frozenset({"succeeded", "failed", "rejected", "cancelled"})
AGENT_TYPES = ("security", "remediation", "analysis")
AUTONOMY_MODES = ("require_approval", "dry_run_only", "autonomous")


class AgentTask(Base):
    __tablename__ = "agent_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(Text)
    requested_agent: Mapped[str | None] = mapped_column(String(16), default=None)
    agent_type: Mapped[str | None] = mapped_column(String(16), default=None, index=True)
    route_reason: Mapped[str | None] = mapped_column(Text, default=None)
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    server_id: Mapped[int | None] = mapped_column(default=None)
    status: Mapped[str] = mapped_column(String(24), default="queued", index=True)
    # {"mode": "require_approval"|"dry_run_only"|"autonomous", "tools": [...]}
    autonomy: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    actor: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[int | None] = mapped_column(default=None, index=True)
    schedule_id: Mapped[int | None] = mapped_column(default=None)
    model_backend: Mapped[str] = mapped_column(String(16), default="local")
    final_answer: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AgentStep(Base):
    __tablename__ = "agent_task_steps"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_agent_step_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(
        ForeignKey("agent_tasks.id", ondelete="CASCADE"), index=True
    )
    # route | message | tool_call | approval | final | error
    kind: Mapped[str] = mapped_column(String(16))
    agent: Mapped[str | None] = mapped_column(String(16), default=None)
    tool: Mapped[str | None] = mapped_column(String(64), default=None)
    call_id: Mapped[str | None] = mapped_column(String(100), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    # tool_call: started | completed | failed | rejected | denied
    status: Mapped[str | None] = mapped_column(String(16), default=None)
    content: Mapped[str | None] = mapped_column(Text, default=None)
    args: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    result_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class AgentApproval(Base):
    __tablename__ = "agent_approvals"
    __table_args__ = (UniqueConstraint("task_id", "call_id", name="uq_agent_approval_call"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(
        ForeignKey("agent_tasks.id", ondelete="CASCADE"), index=True
    )
    call_id: Mapped[str] = mapped_column(String(100))
    agent: Mapped[str] = mapped_column(String(16))
    tool: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    # pending | approved | rejected | edited | expired | cancelled
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    decision_args: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    decided_by: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    decided_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class AgentSchedule(Base):
    __tablename__ = "agent_schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    # cron: a 5-field cron expression; or an event trigger {"event": "incident_opened", ...}
    cron: Mapped[str | None] = mapped_column(String(100), default=None)
    trigger: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    task: Mapped[str | None] = mapped_column(Text, default=None)
    playbook: Mapped[str | None] = mapped_column(String(200), default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    agent_type: Mapped[str | None] = mapped_column(String(16), default=None)
    server_id: Mapped[int | None] = mapped_column(default=None)
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    autonomy: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    actor: Mapped[str] = mapped_column(String(200))
    next_run_at: Mapped[dt.datetime | None] = mapped_column(default=None, index=True)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_task_id: Mapped[int | None] = mapped_column(default=None)
    cursor: Mapped[int] = mapped_column(default=0)  # ledger seq read up to (event triggers)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
