"""``execflow worker``, ``execflow beat`` and ``execflow jobs list|show|follow|cancel|enqueue``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from api.cli import load_settings
from models.db import init_database
from models.settings import Settings

T = TypeVar("T")


def load_handlers(settings: Settings) -> None:
    """Register the job handlers ``execflow serve`` has: routers and EXECFLOW_JOB_MODULES."""
    from api.app import router_modules
    from orchestrator.jobs import import_job_modules

    router_modules()
    import_job_modules(settings)


def _run_db(settings: Settings, fn: Callable[[], Awaitable[T]]) -> T:
    async def run() -> T:
        db = init_database(settings.db_url)
        try:
            return await fn()
        finally:
            await db.dispose()

    return asyncio.run(run())


def _require_redis(settings: Settings) -> None:
    if not settings.redis_url:
        click.echo("error: EXECFLOW_REDIS_URL is required for Celery workers and beat", err=True)
        sys.exit(2)


@click.command()
@click.option("--concurrency", "-c", type=int, default=None, help="Jobs at once (default: setting)")
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    default="threads",
    show_default=True,
    help="Celery pool; jobs are async, so threads share one event loop per process",
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--queues", "-Q", default=None, help="Priorities to consume, e.g. critical,high")
def worker(concurrency: int | None, pool: str, loglevel: str, queues: str | None) -> None:
    """Run a Celery worker for ExecFlow jobs (EXECFLOW_REDIS_URL is the broker)."""
    import os
    import socket

    from api.logs import configure_logging
    from orchestrator.celery_app import PRIORITY_ORDER, celery_app, configure, queue_name

    settings = load_settings()
    _require_redis(settings)
    configure_logging(settings.log_format, settings.log_level)
    load_handlers(settings)
    configure(celery_app, settings)
    wanted = [p.strip() for p in (queues or ",".join(PRIORITY_ORDER)).split(",") if p.strip()]
    bad = [p for p in wanted if p not in PRIORITY_ORDER]
    if bad:
        click.echo(f"error: unknown priorities {bad}; use {PRIORITY_ORDER}", err=True)
        sys.exit(2)
    ordered = [p for p in PRIORITY_ORDER if p in wanted]
    celery_app.worker_main(
        [
            "worker",
            f"--pool={pool}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--loglevel={loglevel}",
            "--queues=" + ",".join(queue_name(p, settings) for p in ordered),
            f"--hostname=execflow-{os.getpid()}@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@click.command()
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between ticks")
def beat(poll: float) -> None:
    """Fire cron schedules from the database (and, with Celery, dispatch due jobs)."""
    from api.logs import configure_logging
    from orchestrator.scheduler import Scheduler

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    load_handlers(settings)
    celery = settings.queue_backend == "celery"
    if celery:
        _require_redis(settings)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        scheduler = Scheduler(poll_seconds=poll)
        tasks = []
        if celery:
            from models.jobs import add_job_dispatcher
            from orchestrator.celery_app import (
                celery_app,
                celery_dispatcher,
                configure,
                sweep_forever,
            )

            configure(celery_app, settings)
            add_job_dispatcher(celery_dispatcher)
            tasks.append(asyncio.create_task(sweep_forever(stop)))
        scheduler.start()
        click.echo(f"execflow beat running ({settings.queue_backend} backend)")
        await stop.wait()
        await scheduler.stop()
        for task in tasks:
            await task

    _run_db(settings, run)


@click.group()
def jobs() -> None:
    """Inspect, follow and cancel background jobs."""


def _line(job: dict[str, Any]) -> str:
    pct = f"{job['progress'] * 100:5.1f}%"
    return (
        f"{job['id']:>6}  {job['status']:<9}  {pct}  {job['priority']:<8}  "
        f"{job['name']:<28}  {job['created_at'][:19]}  {job['message'] or ''}"
    )


@jobs.command("list")
@click.option("--status", default=None, help="queued, running, succeeded, failed, cancelled")
@click.option("--name", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--offset", type=int, default=0)
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
def jobs_list(status: str | None, name: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List jobs, newest first."""
    from models.errors import ExecFlowError
    from models.jobs import list_jobs

    settings = load_settings()

    async def run() -> list[dict[str, Any]]:
        from models.db import session_scope

        async with session_scope() as session:
            rows = await list_jobs(session, status=status, name=name, limit=limit, offset=offset)
            return [j.to_dict() for j in rows]

    try:
        rows = _run_db(settings, run)
    except ExecFlowError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for job in rows:
        click.echo(_line(job))


async def _get(job_id: int) -> dict[str, Any] | None:
    from models.db import session_scope
    from models.jobs import get_job

    async with session_scope() as session:
        job = await get_job(session, job_id)
        return job.to_dict() if job else None


@jobs.command("show")
@click.argument("job_id", type=int)
def jobs_show(job_id: int) -> None:
    """Show one job as JSON."""
    settings = load_settings()
    job = _run_db(settings, lambda: _get(job_id))
    if job is None:
        click.echo(f"error: job {job_id} not found", err=True)
        sys.exit(1)
    click.echo(json.dumps(job, indent=2))


@jobs.command("follow")
@click.argument("job_id", type=int)
@click.option("--poll", type=float, default=0.25, show_default=True)
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds")
def jobs_follow(job_id: int, poll: float, timeout: float | None) -> None:
    """Follow a job with a progress bar until it ends; exit 0 only if it succeeded."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from models.jobs import FINAL_STATES

    settings = load_settings()
    console = Console(stderr=True)

    async def run() -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        job = await _get(job_id)
        if job is None:
            return None
        with Progress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[status]}"),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            bar = progress.add_task(
                "job", total=1.0, label=f"#{job_id} {job['name']}", status="", note=""
            )
            while True:
                progress.update(
                    bar,
                    completed=job["progress"],
                    status=job["status"],
                    note=(job["message"] or "")[:60],
                )
                if job["status"] in FINAL_STATES:
                    return job
                if deadline is not None and loop.time() > deadline:
                    return job
                await asyncio.sleep(poll)
                job = await _get(job_id) or job

    job = _run_db(settings, run)
    if job is None:
        click.echo(f"error: job {job_id} not found", err=True)
        sys.exit(1)
    detail = job["error"] if job["status"] != "succeeded" else json.dumps(job["result"])
    click.echo(f"job {job_id} {job['status']}: {detail}")
    sys.exit(0 if job["status"] == "succeeded" else 1)


@jobs.command("cancel")
@click.argument("job_id", type=int)
def jobs_cancel(job_id: int) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    from models import ledger
    from models.db import session_scope
    from models.errors import ExecFlowError
    from orchestrator.jobs import cancel_job

    settings = load_settings()

    async def run() -> dict[str, Any]:
        async with session_scope() as session:
            job = await cancel_job(session, job_id=job_id)
        await ledger.record(
            "job.cancel",
            actor="cli",
            target=f"job:{job_id}",
            params={"name": job["name"]},
            result={"status": job["status"], "cancel_requested": job["cancel_requested"]},
        )
        return job

    try:
        job = _run_db(settings, run)
    except ExecFlowError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    state = "cancelled" if job["status"] == "cancelled" else "cancel requested"
    click.echo(f"job {job_id}: {state}")


@jobs.command("enqueue")
@click.argument("name")
@click.option("--args", "args_json", default="{}", help="Arguments as a JSON object")
@click.option(
    "--priority",
    type=click.Choice(["low", "normal", "high", "critical"]),
    default="normal",
    show_default=True,
)
@click.option("--key", "idempotency_key", default=None, help="Idempotency key")
@click.option("--delay", type=float, default=0.0, help="Seconds before it may run")
@click.option("--max-attempts", type=int, default=1, show_default=True)
def jobs_enqueue(
    name: str,
    args_json: str,
    priority: str,
    idempotency_key: str | None,
    delay: float,
    max_attempts: int,
) -> None:
    """Enqueue job NAME (a registered handler) and print its id."""
    from models.errors import ExecFlowError
    from models.jobs import add_job_dispatcher, enqueue

    settings = load_settings()
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        click.echo(f"error: --args is not JSON: {exc}", err=True)
        sys.exit(2)
    if not isinstance(args, dict):
        click.echo("error: --args must be a JSON object", err=True)
        sys.exit(2)
    load_handlers(settings)
    if settings.queue_backend == "celery":
        from orchestrator.celery_app import celery_app, celery_dispatcher, configure

        configure(celery_app, settings)
        add_job_dispatcher(celery_dispatcher)

    async def run() -> int:
        return await enqueue(
            name,
            args,
            priority=priority,
            idempotency_key=idempotency_key,
            delay_seconds=delay,
            max_attempts=max_attempts,
        )

    try:
        job_id = _run_db(settings, run)
    except ExecFlowError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    click.echo(job_id)


def register(main: click.Group) -> None:
    main.add_command(worker)
    main.add_command(beat)
    main.add_command(jobs)
