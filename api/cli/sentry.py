"""``execflow sentry probe|health|incidents``: Sentry V from the command line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from api.cli import load_settings
from models.db import init_database
from models.errors import ExecFlowError


def _run(work: Callable[[AsyncSession], Awaitable[Any]]) -> None:
    """Run ``work`` with a session on the configured database; print JSON or the error."""
    settings = load_settings()

    async def main() -> Any:
        database = init_database(settings.db_url)
        try:
            async with database.session() as session:
                return await work(session)
        finally:
            await database.dispose()

    try:
        result = asyncio.run(main())
    except ExecFlowError as exc:
        click.echo(f"error: {exc.message}", err=True)
        raise SystemExit(1) from exc
    click.echo(json.dumps(result, indent=2, default=str))


@click.group()
def sentry() -> None:
    """Site monitoring: probes, health, incidents."""


@sentry.command()
@click.argument("site_id", type=int)
def probe(site_id: int) -> None:
    """Probe a site now, store the result and advance its incident state."""
    from models.db import utcnow
    from models.errors import NotFound
    from tools.sentry.scheduler import make_client, probe_site

    async def work(_session: AsyncSession) -> Any:
        async with make_client() as client:
            result = await probe_site(site_id, now=utcnow(), client=client)
        if result is None:
            raise NotFound(f"Site {site_id} not found")
        return result

    _run(work)


@sentry.command()
@click.argument("site_id", type=int)
def health(site_id: int) -> None:
    """Health score, threat level and 24-hour prediction of a site."""
    from tools.sentry import get_site_health

    _run(lambda session: get_site_health(session, site_id=site_id))


@sentry.command()
@click.option("--status", default="all", type=click.Choice(["open", "resolved", "all"]))
@click.option("--severity", default=None, type=click.Choice(["critical", "high", "medium", "low"]))
@click.option("--limit", default=50, type=click.IntRange(1, 200))
@click.option("--offset", default=0, type=click.IntRange(0))
def incidents(status: str, severity: str | None, limit: int, offset: int) -> None:
    """Incidents, newest first."""
    from tools.sentry import list_incidents

    _run(
        lambda session: list_incidents(
            session, status=status, severity=severity, limit=limit, offset=offset
        )
    )


def register(main: click.Group) -> None:
    main.add_command(sentry)
