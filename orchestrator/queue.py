"""The embedded job backend: an in-process pool of async workers over the jobs table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from sqlalchemy import update

from models import jobs
from models.db import get_database
from orchestrator.runner import claim, execute

log = logging.getLogger("execflow.jobs")


class InProcessQueue:
    """N asyncio workers that claim due jobs by priority; woken at once by ``enqueue``."""

    def __init__(self, *, concurrency: int = 4, idle_poll_seconds: float = 1.0) -> None:
        self.concurrency = concurrency
        self.idle_poll_seconds = idle_poll_seconds
        self.worker_id = f"inprocess:{socket.gethostname()}:{os.getpid()}"
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        """Requeue jobs a previous embedded process left running, then start the workers."""
        async with get_database().session() as session:
            await session.execute(
                update(jobs.Job)
                .where(jobs.Job.status == "running", jobs.Job.worker.like("inprocess:%"))
                .values(status="queued", worker=None)
            )
        jobs.add_dispatcher(lambda _job_id: self._wake.set())
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                job = await claim(worker=self.worker_id)
            except Exception:
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll_seconds)
                continue
            self._wake.set()  # another job may be due: let an idle sibling look
            await execute(job)
