"""Fixtures for agent tests: the recording tool backend and a bounded wait for task states."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import orchestrator.tasks as task_service
from agents.toolkit import RecordingBackend


@pytest.fixture(scope="module")
def recording() -> Iterator[RecordingBackend]:
    backend = RecordingBackend()
    previous = task_service.backend_override
    task_service.backend_override = backend
    yield backend
    task_service.backend_override = previous


async def wait_status(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    task_id: int,
    states: set[str],
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Poll a task until its status is one of ``states`` (bounded in time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    body: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        r = await client.get(f"/api/agents/tasks/{task_id}", headers=headers)
        body = r.json()
        if body.get("task", {}).get("status") in states:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} never reached {states}: {body.get('task')}")
