"""The scale-out job backend: Celery with Redis as the broker.

The database stays the source of truth; a Celery message only carries a job id and means
"this job may be due". A task claims its job atomically in the database (``runner.claim``), so
a duplicate or late message is a no-op, and runs the registered handler on a per-process event
loop. Messages are acknowledged late and rejected when the worker is lost; Redis restores an
unacknowledged message after the visibility timeout, which is longer than the longest job.

Nothing is lost if a message is: each worker (and ``execflow beat``) runs a dispatch sweep that
hands to Celery every due job nobody was told about recently — delayed jobs when they fall
due, retries after their backoff, jobs whose dispatch failed, and jobs left ``running`` by a
dead worker once their lease lapses (``runner.claim`` then takes them over).

Start workers with ``execflow worker`` (or ``celery -A orchestrator.celery_app worker``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import Celery, signals
from kombu import Exchange, Queue
from sqlalchemy import or_, select, update

from models.db import get_database, init_database, utcnow
from models.jobs import PRIORITIES, PRIORITY_NAMES, Job
from models.settings import Settings, get_settings
from orchestrator.jobs import import_job_modules
from orchestrator.runner import _due, claim, execute, worker_name

log = logging.getLogger("execflow.jobs")
T = TypeVar("T")

TASK_NAME = "execflow.run_job"
# Queues are consumed in this order (kombu's "priority" queue order strategy): critical first.
PRIORITY_ORDER = sorted(PRIORITIES, key=lambda p: -PRIORITIES[p])
REDISPATCH_AFTER_SECONDS = 60.0
SWEEP_SECONDS = 1.0


def queue_name(priority: str, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return f"{settings.redis_prefix}.jobs.{priority}"


def configure(app: Celery, settings: Settings) -> Celery:
    """Point ``app`` at the settings' Redis with ExecFlow's delivery guarantees."""
    app.conf.update(
        broker_url=settings.redis_url or "redis://127.0.0.1:6379/0",
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.job_visibility_timeout,
            "queue_order_strategy": "priority",
            "global_keyprefix": f"{settings.redis_prefix}:celery:",
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        },
        task_queues=[_queue(queue_name(p, settings)) for p in PRIORITY_ORDER],
        task_default_queue=queue_name("normal", settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_enable_remote_control=False,
        task_send_sent_event=False,
        timezone="UTC",
    )
    app.execflow_settings = settings  # type: ignore[attr-defined]
    # Reconfiguring (tests, a CLI flag) must not keep publishing through pools made for the
    # previous broker settings: drop the app's references; they are rebuilt on next publish.
    app._pool = None  # not closed: kombu's global producer pools may still share it
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    return app


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


celery_app = Celery("execflow")
configure(celery_app, get_settings())


# -- a per-process event loop the (synchronous) Celery tasks submit coroutines to -------------


class Portal:
    """An asyncio loop in a daemon thread; the process's database lives on it."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="execflow-jobs-loop", daemon=True
        )
        self.thread.start()
        self.run(self._init(settings))

    @staticmethod
    async def _init(settings: Settings) -> None:
        init_database(settings.db_url)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)


_portal: Portal | None = None
_portal_pid = 0
_portal_lock = threading.Lock()


def portal() -> Portal:
    """This process's portal (a forked child makes its own)."""
    global _portal, _portal_pid
    with _portal_lock:
        if _portal is None or _portal_pid != os.getpid():
            _portal = Portal(get_settings())
            _portal_pid = os.getpid()
        return _portal


# -- the task ---------------------------------------------------------------------------------


@celery_app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(job_id: int) -> str:
    """Claim job ``job_id`` in the database and run it; a no-op if it is not claimable."""
    return portal().run(run_job_async(job_id))


async def run_job_async(job_id: int) -> str:
    job = await claim(worker=worker_name("celery"), job_id=job_id)
    if job is None:
        return "skipped"  # already taken, finished, cancelled, or not yet due
    return await execute(job)


# -- dispatching ------------------------------------------------------------------------------


def send_job(job_id: int, priority: int | str, app: Celery | None = None) -> None:
    """Publish one message for ``job_id`` on its priority's queue (blocking I/O)."""
    app = app or celery_app
    name = priority if isinstance(priority, str) else PRIORITY_NAMES.get(priority, "normal")
    queue = queue_name(name, getattr(app, "execflow_settings", None))
    app.send_task(TASK_NAME, args=[job_id], queue=queue, retry=False)


async def celery_dispatcher(job: Job) -> None:
    """The ``models.jobs`` dispatcher installed when the backend is Celery."""
    await asyncio.to_thread(send_job, job.id, job.priority)


async def dispatch_due(*, limit: int = 500, redispatch_after: float | None = None) -> int:
    """Hand to Celery every due job no worker was told about recently; returns how many."""
    now = utcnow()
    stale = now - dt.timedelta(
        seconds=REDISPATCH_AFTER_SECONDS if redispatch_after is None else redispatch_after
    )
    not_told = or_(Job.dispatched_at.is_(None), Job.dispatched_at < stale)
    to_send: list[tuple[int, int]] = []
    async with get_database().session() as session:
        rows = (
            await session.execute(
                select(Job.id, Job.priority)
                .where(_due(now), not_told)
                .order_by(Job.priority.desc(), Job.id)
                .limit(limit)
            )
        ).all()
        for job_id, priority in rows:
            marked = await session.execute(
                update(Job)
                .where(Job.id == job_id, _due(now), not_told)
                .values(dispatched_at=now, updated_at=Job.updated_at)  # not a visible change
                .execution_options(synchronize_session=False)
            )
            if marked.rowcount == 1:  # type: ignore[attr-defined]
                to_send.append((job_id, priority))
    sent = 0
    for job_id, priority in to_send:
        try:
            await asyncio.to_thread(send_job, job_id, priority)
            sent += 1
        except Exception:
            log.exception("dispatching job %s failed; it will be dispatched again", job_id)
    return sent


async def sweep_forever(stop: asyncio.Event, *, every: float = SWEEP_SECONDS) -> None:
    """Run ``dispatch_due`` every ``every`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await dispatch_due()
        except Exception:
            log.exception("the job dispatch sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


# -- worker lifecycle -------------------------------------------------------------------------

_sweep_stop: asyncio.Event | None = None
_sweep_future: concurrent.futures.Future[None] | None = None
_webhooks: Any = None  # this worker's webhook dispatcher, when it runs one


async def _start_webhook_dispatcher() -> Any:
    """Webhook deliveries are background work too, so workers run the dispatcher (any number
    may share a database: fan-out is a compare-and-set, deliveries are leased) and API
    replicas can turn theirs off (EXECFLOW_WEBHOOK_DISPATCHER=false on the replicas)."""
    from tools.webhooks.dispatcher import Dispatcher

    dispatcher = Dispatcher()
    await dispatcher.start()
    return dispatcher


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    import_job_modules()


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    """Start this worker's dispatch sweep (delayed jobs, retries, dead workers' jobs) and,
    unless EXECFLOW_WEBHOOK_DISPATCHER=false, its webhook dispatcher."""
    global _sweep_stop, _sweep_future, _webhooks
    p = portal()

    async def make_event() -> asyncio.Event:
        return asyncio.Event()

    _sweep_stop = p.run(make_event())
    _sweep_future = p.submit(sweep_forever(_sweep_stop))
    if get_settings().webhook_dispatcher:
        _webhooks = p.run(_start_webhook_dispatcher())
    # On stdout whatever the log level: scripts and tests wait for this line.
    print(f"execflow worker {worker_name('celery')} ready", flush=True)


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    if _sweep_stop is not None and _portal is not None:
        _portal.loop.call_soon_threadsafe(_sweep_stop.set)
        if _sweep_future is not None:
            with contextlib.suppress(Exception):
                _sweep_future.result(timeout=5)
        if _webhooks is not None:
            with contextlib.suppress(Exception):
                _portal.run(_webhooks.stop(), timeout=5)
        with contextlib.suppress(Exception):
            _portal.run(get_database().dispose(), timeout=5)
