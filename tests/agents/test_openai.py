"""The OpenAI-compatible path against a local HTTP server speaking Chat Completions.

The server answers with scripted responses: a route_task tool call, then a tool call, then a
final answer; it also answers errors (500) and malformed tool arguments. Only loopback is used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from agents.models import OpenAIChatModel
from agents.toolkit import RecordingBackend
from models.errors import UpstreamError
from orchestrator.graph import AgentContext, builder, initial_state
from orchestrator.memory import MemoryRecorder


class FakeLLM:
    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []


def _completion(content: str | None = None, calls: list[dict[str, Any]] | None = None) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for i, c in enumerate(calls)
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@pytest.fixture
def llm() -> Iterator[tuple[str, FakeLLM]]:
    state = FakeLLM()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            state.requests.append(json.loads(self.rfile.read(length)))
            status, body = state.script.pop(0) if state.script else (200, _completion("done"))
            self._send(status, body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", state
    finally:
        server.shutdown()
        server.server_close()


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
