"""Chat models the agents bind tools to: the offline local model and an OpenAI-compatible one.

``LocalChatModel`` needs no network and no weights: it reads the task with ``agents.nlu`` and
proposes one tool call at a time, deterministically, then answers from the tool results. It
reads only the operator's task (the first human message): tool output never turns into calls.
``OpenAIChatModel`` speaks Chat Completions with tool calling through the ``openai`` client to
any compatible endpoint (``EXECFLOW_LLM_BASE_URL``, ``EXECFLOW_LLM_MODEL``, key from
``EXECFLOW_LLM_API_KEY`` or ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from agents import nlu
from agents.toolkit import World
from models.errors import UpstreamError

_SERVER_HINT = re.compile(r"\bserver_id=(\d+)")


def _tool_names(tools: Sequence[Any] | None) -> list[str]:
    names = []
    for tool in tools or []:
        if isinstance(tool, dict):
            names.append(tool.get("function", {}).get("name") or tool.get("name"))
        else:
            names.append(getattr(tool, "name", str(tool)))
    return [n for n in names if n]


def _task_text(messages: Sequence[BaseMessage]) -> str:
    for message in messages:
        if isinstance(message, HumanMessage):
            return str(message.content)
    return ""


def _server_hint(messages: Sequence[BaseMessage]) -> int | None:
    for message in messages:
        if isinstance(message, SystemMessage):
            m = _SERVER_HINT.search(str(message.content))
            if m:
                return int(m.group(1))
    return None


_PLANS: dict[tuple[Any, ...], nlu.Plan] = {}


def _cached_plan(task: str, world: World, server_id: int | None) -> nlu.Plan:
    """Plans are pure functions of (task, world names, server): compute once per task."""
    key = (
        task,
        server_id,
        tuple((s["id"], s["name"], s.get("host")) for s in world.servers),
        tuple((s["id"], s["name"]) for s in world.sites),
        tuple(str(p.get("name")) for p in world.playbooks),
    )
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 1024:
            _PLANS.pop(next(iter(_PLANS)))
        plan = _PLANS[key] = nlu.plan(task, world, server_id=server_id)
    return plan


class LocalChatModel(BaseChatModel):
    """Deterministic offline tool-calling model (see module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    world: World = Field(default_factory=World)

    @property
    def _llm_type(self) -> str:
        return "execflow-local"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        formatted = [t if isinstance(t, dict) else convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.decide(messages, **kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.decide(messages, **kwargs))])

    def decide(self, messages: Sequence[BaseMessage], **kwargs: Any) -> AIMessage:
        allowed = _tool_names(kwargs.get("tools"))
        task = _task_text(messages)
        planned = _cached_plan(task, self.world, _server_hint(messages))
        if allowed == ["route_task"]:
            args = {"agent": planned.agent, "reason": planned.reason}
            return AIMessage(
                content="",
                tool_calls=[
                    {"name": "route_task", "args": args, "id": "route", "type": "tool_call"}
                ],
            )
        made = [tc for m in messages if isinstance(m, AIMessage) for tc in m.tool_calls]
        done = [(tc["name"], tc["args"]) for tc in made]
        for call in planned.calls:
            if call.tool not in allowed:
                continue
            if (call.tool, call.args) in done:
                done.remove((call.tool, call.args))
                continue
            call_id = f"call_{len(made) + 1}"
            return AIMessage(
                content="",
                tool_calls=[
                    {"name": call.tool, "args": call.args, "id": call_id, "type": "tool_call"}
                ],
            )
        return AIMessage(content=self._answer(messages, planned, allowed))

    def _answer(
        self, messages: Sequence[BaseMessage], planned: nlu.Plan, allowed: list[str]
    ) -> str:
        lines = []
        results = [m for m in messages if isinstance(m, ToolMessage)]
        for message in results:
            body = str(message.content)
            lines.append(f"- {message.name or 'tool'}: {body[:300]}")
        skipped = [c.tool for c in planned.calls if c.tool not in allowed]
        if skipped:
            lines.append(f"Not available to this agent: {', '.join(sorted(set(skipped)))}.")
        lines += [f"Note: {n}." for n in planned.notes]
        if not results and not planned.calls:
            lines.insert(
                0,
                "I could not identify an action in this task. Name the server or site and "
                "what to do (for example: 'restart nginx on prod-web-01').",
            )
        return "\n".join(lines) if lines else "Nothing to do."


def _to_openai(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": str(m.content)})
        elif isinstance(m, HumanMessage):
            out.append({"role": "user", "content": str(m.content)})
        elif isinstance(m, AIMessage):
            item: dict[str, Any] = {"role": "assistant", "content": str(m.content or "")}
            if m.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": tc["id"],
                        "type": "function",
                        "function": {"name": tc["name"], "arguments": json.dumps(tc["args"])},
                    }
                    for tc in m.tool_calls
                ]
            out.append(item)
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": str(m.content)})
    return out


class OpenAIChatModel(BaseChatModel):
    """Any OpenAI-compatible Chat Completions endpoint, with tool calling."""

    model: str
    base_url: str | None = None
    api_key: str = "not-needed"
    timeout: float = 60.0
    max_retries: int = 1

    @property
    def _llm_type(self) -> str:
        return "openai-compatible"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        formatted = [t if isinstance(t, dict) else convert_to_openai_tool(t) for t in tools]
        if tool_choice:
            kwargs["tool_choice"] = (
                {"type": "function", "function": {"name": tool_choice}}
                if tool_choice not in {"auto", "required", "none"}
                else tool_choice
            )
        return self.bind(tools=formatted, **kwargs)

    def _request(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.model, "messages": _to_openai(messages)}
        if kwargs.get("tools"):
            request["tools"] = kwargs["tools"]
        if kwargs.get("tool_choice"):
            request["tool_choice"] = kwargs["tool_choice"]
        return request

    @staticmethod
    def _parse(response: Any) -> AIMessage:
        choice = response.choices[0].message
        calls = []
        for tc in choice.tool_calls or []:
            try:
                args = json.loads(tc.function.arguments or "{}")
            except json.JSONDecodeError as exc:
                raise UpstreamError(
                    f"model returned invalid JSON arguments for {tc.function.name}",
                    code="LLM_BAD_RESPONSE",
                ) from exc
            calls.append({"name": tc.function.name, "args": args, "id": tc.id, "type": "tool_call"})
        return AIMessage(content=choice.content or "", tool_calls=calls)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        import openai

        with openai.OpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        ) as client:
            try:
                response = client.chat.completions.create(**self._request(messages, kwargs))
            except openai.OpenAIError as exc:
                raise UpstreamError(f"LLM endpoint error: {exc}", code="LLM_ERROR") from exc
        return ChatResult(generations=[ChatGeneration(message=self._parse(response))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        import openai

        client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )
        try:
            response = await client.chat.completions.create(**self._request(messages, kwargs))
        except openai.OpenAIError as exc:
            raise UpstreamError(f"LLM endpoint error: {exc}", code="LLM_ERROR") from exc
        finally:
            await client.close()
        return ChatResult(generations=[ChatGeneration(message=self._parse(response))])

    async def ping(self) -> bool:
        """Whether the endpoint answers (GET /models)."""
        import openai

        client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=5.0, max_retries=0
        )
        try:
            await client.models.list()
            return True
        except openai.OpenAIError:
            return False
        finally:
            await client.close()


def make_model(backend: str, world: World) -> BaseChatModel:
    """The chat model for a backend name ('local' or 'openai') from settings."""
    if backend == "local":
        return LocalChatModel(world=world)
    import os

    from models.settings import get_settings

    settings = get_settings()
    if not settings.llm_model:
        raise UpstreamError("EXECFLOW_LLM_MODEL is not set", code="LLM_NOT_CONFIGURED")
    key = os.environ.get("EXECFLOW_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
    return OpenAIChatModel(
        model=settings.llm_model,
        base_url=settings.llm_base_url,
        api_key=key,
        timeout=settings.llm_timeout_seconds,
    )
