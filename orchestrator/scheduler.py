"""The cron scheduler: fires due schedules (``models.schedules``) by enqueueing their jobs.

It runs inside ``execflow serve`` (in-process backend) or as ``execflow beat``. It keeps no
schedule in memory: every tick reads the table, so schedules added through the API apply at
the next tick. The clock is injectable, so tests step time instead of waiting for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from models import schedules
from models.db import utcnow

log = logging.getLogger("execflow.jobs")


class Scheduler:
    """Tick every ``poll_seconds`` (sooner when a schedule is due sooner)."""

    def __init__(
        self,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        poll_seconds: float = 1.0,
    ) -> None:
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def tick(self, now: dt.datetime | None = None) -> list[int]:
        """Fire whatever is due at ``now`` (default: the clock); returns the enqueued job ids."""
        fired = await schedules.fire_due(now or self.clock())
        if fired:
            log.info("schedules fired jobs %s", fired)
        return fired

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
                wait = self.poll_seconds
                upcoming = await schedules.next_due_at()
                if upcoming is not None:
                    until = (upcoming - self.clock()).total_seconds()
                    wait = max(0.01, min(wait, until))
            except Exception:
                log.exception("the scheduler tick failed")
                wait = self.poll_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
