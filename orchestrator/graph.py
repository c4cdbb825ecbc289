"""The LangGraph supervisor: route a task to one of three agents, each a tool-calling loop.

    START -> supervisor -(Command goto)-> security | remediation | analysis
    <agent> -(tool calls)-> tools -(Command goto)-> <agent>  ...  <agent> -(answer)-> END

Every tool call goes through the approval gate in ``tools``: calls outside the agent's
allow-list are refused; the executor's command policy applies; read-only calls run at once;
state-changing calls run only when the task's autonomy policy allows them, or else after an
``interrupt()`` that a human decision resumes. The node re-runs from its start on resume, so
each call carries an idempotency key (``task:<id>:<call_id>``) and a completed call's stored
result is replayed, never executed again. The decision itself is read from the task store
(the approval row), not from the resume payload.

``graph`` is compiled at module level without a checkpointer (inspection, tests); runs compile
``builder`` with a persistent checkpointer (``open_checkpointer``).
"""

from __future__ import annotations

import os

os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol, TypedDict

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from agents import policy, prompts
from agents.toolkit import AGENTS, TOOLS, ToolBackend, result_hash, tools_for
from models.errors import ExecFlowError, PolicyDenied
from models.settings import Settings

AgentName = Literal["security", "remediation", "analysis"]
MAX_TOOL_OUTPUT = 8000


class AgentState(TypedDict, total=False):
    task: str
    task_id: int
    server_id: int | None
    requested_agent: str | None
    agent: str | None
    route_reason: str | None
    messages: Annotated[list[AnyMessage], add_messages]
    tool_steps: int
    final: str | None


@dataclass
class CallRecord:
    status: str  # started | completed | failed | rejected | denied
    result: dict[str, Any] | None = None


@dataclass
class ApprovalRecord:
    id: int
    status: str  # pending | approved | edited | rejected | expired | cancelled
    args: dict[str, Any]
    decision_args: dict[str, Any] | None = None
    comment: str | None = None
    expires_at: str | None = None


class Recorder(Protocol):
    """Where the graph writes what happens (the task store, or memory in the evals)."""

    async def route(self, task_id: int, agent: str, reason: str) -> None: ...

    async def message(self, task_id: int, agent: str, message: AIMessage) -> None: ...

    async def get_call(self, key: str) -> CallRecord | None: ...

    async def call_started(
        self, key: str, *, task_id: int, agent: str, tool: str, call_id: str, args: dict[str, Any]
    ) -> bool:
        """Claim the call (True) or learn that another attempt already holds it (False)."""
        ...

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
    ) -> None: ...

    async def request_approval(
        self, *, task_id: int, call_id: str, agent: str, tool: str, args: dict[str, Any]
    ) -> ApprovalRecord: ...

    async def approval_state(self, approval_id: int) -> ApprovalRecord: ...

    async def approval_for(self, task_id: int, call_id: str) -> ApprovalRecord | None:
        """The approval requested for this call, if one was."""
        ...


@dataclass
class AgentContext:
    """Run-time dependencies of one task run (not checkpointed)."""

    model: BaseChatModel
    backend: ToolBackend
    recorder: Recorder
    actor: str
    autonomy: dict[str, Any] = field(default_factory=dict)
    max_tool_steps: int = 12
    request_id: str | None = None


def _system_prompt(agent: str, state: AgentState) -> SystemMessage:
    text = prompts.AGENTS[agent]
    if state.get("server_id"):
        text += f"\nTask scope: server_id={state['server_id']}."
    return SystemMessage(content=text)


async def supervisor(state: AgentState, runtime: Runtime[AgentContext]) -> Command[AgentName]:
    ctx = runtime.context
    requested = state.get("requested_agent")
    if requested in AGENTS:
        agent, reason = str(requested), "agent_type requested by the caller"
    else:
        model = ctx.model.bind_tools([prompts.ROUTE_TOOL], tool_choice="route_task")
        reply = await model.ainvoke(
            [SystemMessage(content=prompts.SUPERVISOR), HumanMessage(content=state["task"])]
        )
        args = reply.tool_calls[0]["args"] if getattr(reply, "tool_calls", None) else {}
        agent = str(args.get("agent", ""))
        reason = str(args.get("reason", "")) or "chosen by the supervisor model"
        if agent not in AGENTS:
            agent, reason = "analysis", f"the model chose no valid agent ({agent!r}); read-only"
    await ctx.recorder.route(state["task_id"], agent, reason)
    return Command(goto=agent, update={"agent": agent, "route_reason": reason})  # type: ignore[arg-type]


def _agent_node(agent: str) -> Any:
    async def run(state: AgentState, runtime: Runtime[AgentContext]) -> Command[Any]:
        ctx = runtime.context
        schemas = [spec.json_schema() for spec in tools_for(agent)]
        model = ctx.model.bind_tools(schemas)
        history = list(state.get("messages", []))
        reply = await model.ainvoke([_system_prompt(agent, state), *history])
        if not isinstance(reply, AIMessage):
            reply = AIMessage(content=str(getattr(reply, "content", reply)))
        await ctx.recorder.message(state["task_id"], agent, reply)
        if reply.tool_calls and state.get("tool_steps", 0) < ctx.max_tool_steps:
            return Command(goto="tools", update={"messages": [reply]})
        final = str(reply.content or "")
        if reply.tool_calls:
            final = (final + "\n" if final else "") + "Stopped: the tool-call budget is spent."
            reply = AIMessage(content=final)
        return Command(goto=END, update={"messages": [reply], "final": final})

    run.__name__ = agent
    return run


def _tool_message(call: dict[str, Any], payload: dict[str, Any]) -> ToolMessage:
    body = json.dumps(payload, default=str, sort_keys=True)
    if len(body) > MAX_TOOL_OUTPUT:
        body = body[:MAX_TOOL_OUTPUT] + "...(truncated)"
    return ToolMessage(content=body, tool_call_id=call["id"], name=call["name"])


async def tools(state: AgentState, runtime: Runtime[AgentContext]) -> Command[AgentName]:
    ctx = runtime.context
    agent = str(state["agent"])
    last = state["messages"][-1]
    assert isinstance(last, AIMessage)
    out = []
    for tool_call in last.tool_calls:
        call = dict(tool_call)
        payload = await _run_call(ctx, state, agent, call)
        out.append(_tool_message(call, payload))
    return Command(
        goto=agent,  # type: ignore[arg-type]
        update={"messages": out, "tool_steps": state.get("tool_steps", 0) + len(out)},
    )


async def _run_call(
    ctx: AgentContext, state: AgentState, agent: str, call: dict[str, Any]
) -> dict[str, Any]:
    task_id = state["task_id"]
    name, call_id = str(call["name"]), str(call.get("id") or "call")
    key = f"task:{task_id}:{call_id}"
    spec = TOOLS.get(name)
    record = await ctx.recorder.get_call(key)
    if record is not None:
        # A call that asked for approval paused the graph once; resume values are matched to
        # interrupts by their order within this node, so on every later pass it must take its
        # interrupt again, or the next call would take its decision (found by the agent
        # manipulation suite: a third gated call resolved as "approval pending" and was lost).
        await _replay_interrupt(ctx, task_id, call_id, name)
    if record is not None and record.status != "started":
        return record.result or {"status": record.status}  # replay, never re-run
    if spec is None or agent not in spec.agents:
        result = {"error": f"tool {name!r} is not allowed for the {agent} agent", "denied": True}
        await _finish(
            ctx, key, task_id, agent, name, dict(call.get("args") or {}), "denied", result
        )
        return result
    try:
        args = spec.validate(dict(call.get("args") or {}))
    except ExecFlowError as exc:
        result = {"error": exc.message, "code": exc.code, "denied": True}
        await _finish(
            ctx, key, task_id, agent, name, dict(call.get("args") or {}), "denied", result
        )
        return result
    if record is not None and record.status == "started" and spec.is_state_changing(args):
        # A worker stopped during this call: its outcome is unknown; never run it twice.
        result = {"error": "the worker stopped during this call; not repeated", "code": "UNKNOWN"}
        await _finish(ctx, key, task_id, agent, name, args, "failed", result)
        return result
    denial = _command_denied(name, args)
    if denial is not None:
        await _finish(ctx, key, task_id, agent, name, args, "denied", denial)
        return denial
    if spec.is_state_changing(args):
        verdict = policy.autonomy_decision(ctx.autonomy, name)
        if verdict == "deny":
            result = {
                "error": "refused: the task's autonomy policy allows read-only and dry-run calls",
                "code": "AUTONOMY_DENIED",
                "denied": True,
            }
            await _finish(ctx, key, task_id, agent, name, args, "denied", result)
            return result
        if verdict == "ask":
            approval = await ctx.recorder.request_approval(
                task_id=task_id, call_id=call_id, agent=agent, tool=name, args=args
            )
            # Always interrupt (even when already decided): resume values match interrupts by
            # their order within this node, so skipping one would hand its value to the next.
            interrupt(
                {
                    "approval_id": approval.id,
                    "task_id": task_id,
                    "tool": name,
                    "args": args,
                    "expires_at": approval.expires_at,
                }
            )
            approval = await ctx.recorder.approval_state(approval.id)
            if approval.status not in {"approved", "edited"}:
                result = {
                    "error": f"not run: approval {approval.status}",
                    "code": "APPROVAL_" + approval.status.upper(),
                    "comment": approval.comment,
                }
                await _finish(ctx, key, task_id, agent, name, args, "rejected", result)
                return result
            if approval.status == "edited":
                try:
                    args = spec.validate(dict(approval.decision_args or {}))
                except ExecFlowError as exc:
                    result = {"error": f"edited arguments invalid: {exc.message}", "denied": True}
                    await _finish(ctx, key, task_id, agent, name, args, "denied", result)
                    return result
                denial = _command_denied(name, args)
                if denial is not None:
                    await _finish(ctx, key, task_id, agent, name, args, "denied", denial)
                    return denial
    claimed = await ctx.recorder.call_started(
        key, task_id=task_id, agent=agent, tool=name, call_id=call_id, args=args
    )
    if not claimed and spec.is_state_changing(args):
        # Another attempt claimed this call first: never run a side effect twice.
        record = await ctx.recorder.get_call(key)
        if record is not None and record.status != "started":
            return record.result or {"status": record.status}
        return {"error": "this call is held by another attempt; not repeated", "code": "UNKNOWN"}
    try:
        result = await ctx.backend.call(spec, args, actor=ctx.actor, request_id=ctx.request_id)
        status = "completed"
    except ExecFlowError as exc:
        result, status = {"error": exc.message, "code": exc.code}, "failed"
    await _finish(ctx, key, task_id, agent, name, args, status, result)
    return result


async def _replay_interrupt(ctx: AgentContext, task_id: int, call_id: str, tool: str) -> None:
    approval = await ctx.recorder.approval_for(task_id, call_id)
    if approval is not None:
        interrupt({"approval_id": approval.id, "task_id": task_id, "tool": tool, "replay": True})


def _command_denied(name: str, args: dict[str, Any]) -> dict[str, Any] | None:
    if name != "execute_command":
        return None
    try:
        policy.check_command_policy(str(args.get("command", "")))
    except PolicyDenied as exc:
        return {"error": exc.message, "code": exc.code, "denied": True}
    return None


async def _finish(
    ctx: AgentContext,
    key: str,
    task_id: int,
    agent: str,
    tool: str,
    args: dict[str, Any],
    status: str,
    result: dict[str, Any],
) -> None:
    await ctx.recorder.call_finished(
        key, task_id=task_id, agent=agent, tool=tool, args=args, status=status, result=result
    )


def build_graph() -> StateGraph[AgentState, AgentContext, AgentState, AgentState]:
    builder: StateGraph[AgentState, AgentContext, AgentState, AgentState] = StateGraph(
        AgentState, context_schema=AgentContext
    )
    builder.add_node("supervisor", supervisor)
    for agent in AGENTS:
        builder.add_node(agent, _agent_node(agent))
    builder.add_node("tools", tools)
    builder.add_edge(START, "supervisor")
    return builder


builder = build_graph()
graph = builder.compile()


def initial_state(
    *, task_id: int, task: str, server_id: int | None, requested_agent: str | None
) -> AgentState:
    return {
        "task": task,
        "task_id": task_id,
        "server_id": server_id,
        "requested_agent": requested_agent,
        "agent": None,
        "route_reason": None,
        "messages": [HumanMessage(content=task)],
        "tool_steps": 0,
        "final": None,
    }


_pg_setup_done: set[str] = set()
# A session advisory-lock key no other code uses: "execflow" in ASCII.
_PG_SETUP_LOCK = 0x65786563666C6F77


async def _setup_postgres_saver(saver: Any, *, wait_seconds: float = 120.0) -> None:
    """``AsyncPostgresSaver.setup()`` cannot run concurrently: two processes doing their first
    agent task on a fresh database both insert the same ``checkpoint_migrations`` row, and one
    task fails (found by the cluster test). An advisory lock serializes the setups across
    processes; the later ones find the migrations applied and do nothing.

    The lock is polled with ``pg_try_advisory_lock``, never waited for in a statement: the
    migrations include ``CREATE INDEX CONCURRENTLY``, which waits for every open transaction,
    so a session blocked in ``pg_advisory_lock`` would deadlock with the holder."""
    deadline = time.monotonic() + wait_seconds
    while not await _try_lock(saver, "pg_try_advisory_lock"):
        if time.monotonic() > deadline:
            raise TimeoutError("another process held the checkpoint setup lock too long")
        await asyncio.sleep(0.1)
    try:
        await saver.setup()
    finally:
        await _try_lock(saver, "pg_advisory_unlock")


async def _try_lock(saver: Any, function: str) -> bool:
    async with saver.conn.cursor() as cursor:
        await cursor.execute(f"SELECT {function}(%s) AS done", (_PG_SETUP_LOCK,))
        row = await cursor.fetchone()
    return bool(row["done"] if isinstance(row, dict) else row[0])


@contextlib.asynccontextmanager
async def open_checkpointer(settings: Settings) -> AsyncIterator[Any]:
    """The persistent checkpointer: SQLite file in the data dir, or PostgreSQL when used."""
    if settings.is_sqlite:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path = settings.data_dir / "agent-checkpoints.sqlite"
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            yield saver
        return
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    url = settings.db_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    async with AsyncPostgresSaver.from_conn_string(url) as saver:
        if url not in _pg_setup_done:
            await _setup_postgres_saver(saver)
            _pg_setup_done.add(url)
        yield saver


def result_digest(result: dict[str, Any]) -> str:
    return result_hash(result)
