"""Webhook fixtures: settings with short retries and loopback allowed, a scripted receiver."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from models.settings import Settings, configure
from tests.webhooks.receiver import Receiver

FAST = {
    "outbound_allowlist": ["127.0.0.1"],
    "webhook_retry_schedule": [0.2, 0.3, 0.4, 0.5, 0.5, 0.5],
    "webhook_retry_jitter": 0.0,
    "webhook_timeout_seconds": 1.0,
    "webhook_poll_seconds": 0.05,
}


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("data")
    s = Settings(data_dir=data_dir, database_url=database_url, log_format="text", **FAST)
    configure(s)
    return s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; bounded in time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
