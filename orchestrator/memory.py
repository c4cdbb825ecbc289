"""An in-memory recorder for the graph (evals and unit tests): same contract as the task store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage

from orchestrator.graph import ApprovalRecord, CallRecord


@dataclass
class MemoryRecorder:
    """Keeps calls and approvals in dicts; ``decide`` sets an approval's decision."""

    routes: list[tuple[int, str, str]] = field(default_factory=list)
    calls: dict[str, CallRecord] = field(default_factory=dict)
    finished: list[dict[str, Any]] = field(default_factory=list)
    approvals: dict[int, ApprovalRecord] = field(default_factory=dict)
    approval_calls: dict[tuple[int, str], int] = field(default_factory=dict)
    requested: list[dict[str, Any]] = field(default_factory=list)

    async def route(self, task_id: int, agent: str, reason: str) -> None:
        self.routes.append((task_id, agent, reason))

    async def message(self, task_id: int, agent: str, message: AIMessage) -> None:
        return None

    async def get_call(self, key: str) -> CallRecord | None:
        return self.calls.get(key)

    async def call_started(
        self, key: str, *, task_id: int, agent: str, tool: str, call_id: str, args: dict[str, Any]
    ) -> bool:
        if key in self.calls:
            return False
        self.calls[key] = CallRecord("started")
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
        self.calls[key] = CallRecord(status, result)
        self.finished.append(
            {"task_id": task_id, "agent": agent, "tool": tool, "args": args, "status": status}
        )

    async def request_approval(
        self, *, task_id: int, call_id: str, agent: str, tool: str, args: dict[str, Any]
    ) -> ApprovalRecord:
        existing = self.approval_calls.get((task_id, call_id))
        if existing is not None:
            return self.approvals[existing]
        approval_id = len(self.approvals) + 1
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=15)
        record = ApprovalRecord(approval_id, "pending", dict(args), expires_at=expires.isoformat())
        self.approvals[approval_id] = record
        self.approval_calls[(task_id, call_id)] = approval_id
        self.requested.append({"task_id": task_id, "agent": agent, "tool": tool, "args": args})
        return record

    async def approval_state(self, approval_id: int) -> ApprovalRecord:
        return self.approvals[approval_id]

    async def approval_for(self, task_id: int, call_id: str) -> ApprovalRecord | None:
        found = self.approval_calls.get((task_id, call_id))
        return None if found is None else self.approvals[found]

    def decide(
        self, approval_id: int, status: str, args: dict[str, Any] | None = None, comment: str = ""
    ) -> None:
        record = self.approvals[approval_id]
        record.status, record.decision_args, record.comment = status, args, comment
