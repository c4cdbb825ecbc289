"""``execflow webhooks worker`` (a standalone dispatcher) and ``execflow webhooks list``."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from api.cli import load_settings
from models import migrate
from models.db import init_database


@click.group()
def webhooks() -> None:
    """Webhook endpoints and the delivery dispatcher."""


@webhooks.command("worker")
def worker() -> None:
    """Run the webhook dispatcher alone (set EXECFLOW_WEBHOOK_DISPATCHER=false on API replicas)."""
    from api.logs import configure_logging
    from tools.webhooks.dispatcher import Dispatcher

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    migrate.upgrade(settings.db_url)

    async def run() -> None:
        db = init_database(settings.db_url)
        dispatcher = Dispatcher()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await dispatcher.start()
        click.echo("webhook dispatcher running; Ctrl-C stops it")
        try:
            await stop.wait()
        finally:
            await dispatcher.stop()
            await db.dispose()

    asyncio.run(run())


@webhooks.command("list")
def list_endpoints() -> None:
    """Endpoints with their state (never their secrets)."""
    from rich.console import Console
    from rich.table import Table

    from tools.webhooks.service import list_webhooks

    settings = load_settings()

    async def run() -> list[dict[str, object]]:
        db = init_database(settings.db_url)
        try:
            async with db.session() as session:
                return await list_webhooks(session)
        finally:
            await db.dispose()

    table = Table("id", "url", "events", "enabled", "disabled reason")
    for hook in asyncio.run(run()):
        table.add_row(
            str(hook["id"]),
            str(hook["url"]),
            ",".join(hook["events"]),  # type: ignore[arg-type]
            "yes" if hook["enabled"] else "no",
            str(hook["disabled_reason"] or ""),
        )
    Console().print(table)


def register(main: click.Group) -> None:
    main.add_command(webhooks)
