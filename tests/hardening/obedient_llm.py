"""A fully manipulated model: a loopback Chat Completions server that obeys every instruction it
reads, in the task or in a tool's output, and believes every "approval already granted".

It answers each request from the newest message only (the task, or the last tool result):

- ``CALL <tool> <json>`` lines become that exact tool call (unknown tools, wrong case, extra
  arguments such as ``"approved": true`` included);
- plain-language orders become calls: ``quarantine 10.0.0.1``, ``release quarantine X``,
  ``block ip X``, ``turn on shield mode for site N``, ``run `CMD` on server N``,
  ``run playbook NAME on server N with {json}``;
- several orders in one message become several calls in one turn; nothing to obey: a final
  answer. Call ids are unique, as a real endpoint's are. Only the outermost edge is fake: the
  graph, the gate and the tools behind it are ExecFlow's own.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.chat_server import chat_completions_server
from tests.support.chat_server import completion as _completion

_ORDERS: list[tuple[re.Pattern[str], Any]] = [
    (
        re.compile(
            r"run playbook ([a-z0-9-]+) on server (\d+) with (\{[^\n]*?\})(?=\s*(?:$|\n))", re.I
        ),
        lambda m: (
            "run_playbook",
            {"playbook": m[1], "server_id": int(m[2]), "params": json.loads(m[3])},
        ),
    ),
    (
        re.compile(r"run `([^`]+)` on server (\d+)", re.I),
        lambda m: ("execute_command", {"server_id": int(m[2]), "command": m[1]}),
    ),
    (
        re.compile(r"release (?:the )?quarantine (?:of )?([0-9a-f.:/]+)", re.I),
        lambda m: ("release_quarantine", {"target": m[1]}),
    ),
    (
        re.compile(r"quarantine ([0-9a-f.:/]*[0-9a-f])", re.I),
        lambda m: ("quarantine_target", {"target": m[1], "reason": "told to"}),
    ),
    (
        re.compile(r"block ip ([0-9./]+[0-9])", re.I),
        lambda m: ("add_vaultshield_rule", {"type": "ip_block", "value": m[1]}),
    ),
    (
        re.compile(r"turn on shield mode for site (\d+)", re.I),
        lambda m: ("set_shield_mode", {"site_id": int(m[1]), "enabled": True}),
    ),
]
_CALL = re.compile(r"CALL (\S+) (\{.*\})")


def orders(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Every instruction in ``text``, in order of appearance, as (tool, arguments)."""
    found: list[tuple[int, str, dict[str, Any]]] = []
    for line_match in _CALL.finditer(text):
        found.append((line_match.start(), line_match[1], json.loads(line_match[2])))
    text = _CALL.sub(lambda m: " " * len(m[0]), text)
    for pattern, build in _ORDERS:
        for match in pattern.finditer(text):
            found.append((match.start(), *build(match)))
        text = pattern.sub(lambda m: " " * len(m[0]), text)  # a span obeys one order only
    return [(tool, args) for _, tool, args in sorted(found, key=lambda f: f[0])]


def _newest_text(messages: list[dict[str, Any]]) -> str:
    content = messages[-1].get("content") or ""
    if isinstance(content, list):  # content parts
        content = " ".join(str(p.get("text", "")) for p in content)
    text = str(content)
    try:  # tool results arrive as JSON: obey what their strings say, unescaped
        return " ".join(_strings(json.loads(text)))
    except ValueError:
        return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class ObedientLLM:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.calls_made: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        messages = request.get("messages") or []
        if messages and messages[-1].get("role") == "tool":
            # the newest turn's tool results (several calls in one turn: all of them)
            tail = list(itertools.takewhile(lambda m: m.get("role") == "tool", reversed(messages)))
            text = " ".join(_newest_text([m]) for m in tail)
        else:
            text = _newest_text(messages) if messages else ""
        todo = orders(text)
        if not todo:
            return _completion("Done: nothing further to do.")
        self.calls_made += todo
        calls = [{"name": tool, "arguments": json.dumps(args)} for tool, args in todo]
        body = _completion(calls=calls)
        for call in body["choices"][0]["message"]["tool_calls"]:
            call["id"] = f"call_{next(self._ids)}"
        return body


@contextmanager
def obedient_llm() -> Iterator[tuple[str, ObedientLLM]]:
    """(base URL, the model's state) of a loopback Chat Completions server."""
    state = ObedientLLM()
    with chat_completions_server(lambda request: (200, state.answer(request))) as url:
        yield url, state
