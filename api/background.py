"""Periodic background work that a router's ``lifespan`` runs while the API is up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger("execflow.background")


@contextlib.asynccontextmanager
async def periodically(
    work: Callable[[], Awaitable[object]],
    seconds: float,
    *,
    what: str,
    initial_delay: float = 0.0,
) -> AsyncIterator[None]:
    """Run ``work`` every ``seconds`` until the block exits; a failure is logged, not fatal."""

    async def loop() -> None:
        await asyncio.sleep(initial_delay)
        while True:
            try:
                await work()
            except Exception:
                log.exception("%s failed", what)
            await asyncio.sleep(seconds)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
