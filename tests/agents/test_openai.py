"""The OpenAI-compatible path against a local HTTP server speaking Chat Completions.

The server answers with scripted responses: a route_task tool call, then a tool call, then a
final answer; it also answers errors (500) and malformed tool arguments. Only loopback is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agents.models import OpenAIChatModel
from agents.toolkit import RecordingBackend
from models.errors import UpstreamError
from orchestrator.graph import AgentContext, builder, initial_state
from orchestrator.memory import MemoryRecorder
from tests.support.chat_server import chat_completions_server
from tests.support.chat_server import completion as _completion


class FakeLLM:
    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []


@pytest.fixture
def llm() -> Iterator[tuple[str, FakeLLM]]:
    state = FakeLLM()

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        state.requests.append(request)
        return state.script.pop(0) if state.script else (200, _completion("done"))

    with chat_completions_server(answer) as url:
        yield url, state


def _run(model: OpenAIChatModel) -> tuple[Any, RecordingBackend, MemoryRecorder]:
    backend, recorder = RecordingBackend(), MemoryRecorder()
    context = AgentContext(model=model, backend=backend, recorder=recorder, actor="t")
    return context, backend, recorder


async def test_tool_calling_round_trip(llm: tuple[str, FakeLLM]) -> None:
    url, fake = llm
    fake.script = [
        (
            200,
            _completion(
                calls=[
                    {
                        "name": "route_task",
                        "arguments": '{"agent": "analysis", "reason": "read-only"}',
                    }
                ]
            ),
        ),
        (200, _completion(calls=[{"name": "list_incidents", "arguments": '{"status": "open"}'}])),
        (200, _completion("There are no open incidents.")),
    ]
    model = OpenAIChatModel(model="fake", base_url=url, api_key="k", max_retries=0)
    context, backend, recorder = _run(model)
    graph = builder.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "o"}}
    out = await graph.ainvoke(
        initial_state(task_id=1, task="any open incidents?", server_id=None, requested_agent=None),
        config,
        context=context,
    )
    assert recorder.routes[0][1] == "analysis"
    assert [(c.tool, c.args) for c in backend.calls] == [("list_incidents", {"status": "open"})]
    assert out["final"] == "There are no open incidents."
    assert fake.requests[0]["tool_choice"]["function"]["name"] == "route_task"
    tools = [t["function"]["name"] for t in fake.requests[1]["tools"]]
    assert "list_incidents" in tools and "quarantine_target" not in tools
    # The tool result went back as a tool message answering the call id.
    tool_msgs = [m for m in fake.requests[2]["messages"] if m["role"] == "tool"]
    assert tool_msgs and tool_msgs[0]["tool_call_id"] == "call_0"
    assert await model.ping() is True


async def test_state_changing_call_from_remote_model_is_gated(llm: tuple[str, FakeLLM]) -> None:
    url, fake = llm
    fake.script = [
        (
            200,
            _completion(
                calls=[{"name": "quarantine_target", "arguments": '{"target": "192.0.2.1"}'}]
            ),
        ),
    ]
    model = OpenAIChatModel(model="fake", base_url=url, api_key="k", max_retries=0)
    context, backend, _recorder = _run(model)
    graph = builder.compile(checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "g"}}
    await graph.ainvoke(
        initial_state(task_id=1, task="x", server_id=None, requested_agent="security"),
        config,
        context=context,
    )
    state = await graph.aget_state(config)
    assert state.interrupts and backend.calls == []


async def test_endpoint_errors_surface_as_upstream_errors(llm: tuple[str, FakeLLM]) -> None:
    url, fake = llm
    fake.script = [(500, {"error": {"message": "boom", "type": "server_error"}})]
    model = OpenAIChatModel(model="fake", base_url=url, api_key="k", max_retries=0)
    from langchain_core.messages import HumanMessage

    with pytest.raises(UpstreamError) as info:
        await model.ainvoke([HumanMessage("hi")])
    assert info.value.code == "LLM_ERROR"
    fake.script = [(200, _completion(calls=[{"name": "list_incidents", "arguments": "{not json"}]))]
    with pytest.raises(UpstreamError) as info:
        await model.ainvoke([HumanMessage("hi")])
    assert info.value.code == "LLM_BAD_RESPONSE"


async def test_unreachable_endpoint_does_not_answer() -> None:
    from tests.support.processes import free_port

    model = OpenAIChatModel(
        model="fake", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k", max_retries=0
    )
    assert await model.ping() is False


def test_synchronous_invoke_speaks_the_same_protocol(llm: tuple[str, FakeLLM]) -> None:
    from langchain_core.messages import HumanMessage

    url, fake = llm
    fake.script = [
        (200, _completion(calls=[{"name": "list_incidents", "arguments": '{"limit": 3}'}])),
        (500, {"error": {"message": "boom", "type": "server_error"}}),
    ]
    model = OpenAIChatModel(model="fake", base_url=url, api_key="k", max_retries=0)
    out = model.invoke([HumanMessage("which incidents are open?")])
    assert [(c["name"], c["args"]) for c in out.tool_calls] == [("list_incidents", {"limit": 3})]
    assert fake.requests[0]["messages"][-1]["content"] == "which incidents are open?"
    with pytest.raises(UpstreamError) as info:
        model.invoke([HumanMessage("again")])
    assert info.value.code == "LLM_ERROR"
