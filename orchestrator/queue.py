"""The embedded job backend: an in-process pool of async workers over the jobs table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from sqlalchemy import select, update

from models import jobs
from models.db import get_database, utcnow
from orchestrator.runner import claim, execute, worker_name

log = logging.getLogger("execflow.jobs")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def expire_dead_local_leases(kinds: tuple[str, ...] = ("inprocess", "celery")) -> int:
    """End the leases of running jobs whose worker was a process on this host that is gone.

    A restarted ``execflow serve`` (or worker) then resumes them at once instead of waiting
    for the lease to lapse. Jobs of other hosts are left to their leases.
    """
    host = socket.gethostname()
    expired = 0
    async with get_database().session() as session:
        rows = (
            await session.execute(
                select(jobs.Job.id, jobs.Job.worker).where(jobs.Job.status == "running")
            )
        ).all()
        for job_id, worker in rows:
            kind, _, rest = (worker or "").partition(":")
            worker_host, _, pid = rest.rpartition(":")
            if kind not in kinds or worker_host != host or not pid.isdigit():
                continue
            if int(pid) == os.getpid() or _pid_alive(int(pid)):
                continue
            await session.execute(
                update(jobs.Job)
                .where(jobs.Job.id == job_id, jobs.Job.worker == worker)
                .values(lease_expires_at=utcnow())
            )
            expired += 1
    return expired


class InProcessQueue:
    """N asyncio workers that claim due jobs by priority; woken at once by ``enqueue``."""

    def __init__(self, *, concurrency: int = 4, idle_poll_seconds: float = 1.0) -> None:
        self.concurrency = concurrency
        self.idle_poll_seconds = idle_poll_seconds
        self.worker_id = worker_name("inprocess")
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # SQLite has one writer: workers of one process take turns claiming instead of
        # colliding in SQLite's busy handler (which backs off in sleeps of up to 100 ms).
        self._claim_lock: asyncio.Lock | None = None

    def _on_enqueue(self, _job_id: int) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Resume jobs a dead process on this host left running, then start the workers.

        Queued jobs need nothing: their state is in the database and the workers claim them.
        """
        try:
            resumed = await expire_dead_local_leases()
            if resumed:
                log.info("resuming %d job(s) left running by a stopped process", resumed)
        except Exception:
            log.exception("checking for jobs left running failed")
        jobs.add_dispatcher(self._on_enqueue)
        if get_database().dialect == "sqlite":
            self._claim_lock = asyncio.Lock()
        self._stopping = False
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        self._stopping = True
        jobs.remove_dispatcher(self._on_enqueue)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                if self._claim_lock is not None:
                    async with self._claim_lock:
                        job = await claim(worker=self.worker_id)
                else:
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
            try:
                await execute(job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("running job %s failed", job.id)
