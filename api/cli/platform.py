"""``execflow serve``, ``execflow db upgrade`` and ``execflow keys ...``."""

from __future__ import annotations

import asyncio

import click

from api.cli import load_settings
from models import migrate
from models.db import init_database
from models.settings import Settings


def _bootstrap_admin_key(settings: Settings) -> str | None:
    """On first start (no keys at all), create an admin key and return it, once."""
    from api.keys import create_api_key
    from models.keys import list_keys

    async def run() -> str | None:
        db = init_database(settings.db_url)
        try:
            async with db.session() as session:
                if await list_keys(session):
                    return None
                _, key = await create_api_key(
                    session, name="bootstrap admin", scope="admin", plan="pro", actor="system"
                )
                return key
        finally:
            await db.dispose()

    return asyncio.run(run())


@click.command()
@click.option("--host", default=None, help="Address to listen on (EXECFLOW_HOST)")
@click.option("--port", default=None, type=int, help="Port to listen on (EXECFLOW_PORT)")
@click.option("--workers/--no-workers", default=True, help="Run the in-process job workers")
def serve(host: str | None, port: int | None, workers: bool) -> None:
    """Migrate the database, then serve the API (and in-process workers)."""
    import uvicorn

    from api.app import create_app
    from api.logs import configure_logging

    settings = load_settings(host=host, port=port)
    configure_logging(settings.log_format, settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)
    key = _bootstrap_admin_key(settings)
    if key:
        click.echo("Created the first admin API key. It is shown once; store it now:\n")
        click.echo(f"    {key}\n")
    click.echo(f"ExecFlow listening on http://{settings.host}:{settings.port}")
    click.echo(f"  API docs: http://{settings.host}:{settings.port}/api/docs")
    click.echo(f"  data dir: {settings.data_dir}")
    app = create_app(settings, run_workers=workers)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)


@click.group()
def db() -> None:
    """Database schema management, export and restore."""


@db.command("upgrade")
@click.option("--revision", default="heads", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url, revision)
    click.echo(f"database at {_safe_url(settings.db_url)} is at {revision}")


from api.cli.backup import db_export, db_restore  # noqa: E402

db.add_command(db_export)
db.add_command(db_restore)


def _safe_url(url: str) -> str:
    """The URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--name", required=True)
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), required=True)
@click.option("--plan", type=click.Choice(["starter", "pro", "enterprise"]), default="starter")
@click.option("--rate", "rate_per_minute", type=int, default=None, help="Enterprise: per minute")
@click.option("--burst", type=int, default=None, help="Enterprise: burst (omit for no cap)")
def keys_create(
    name: str, scope: str, plan: str, rate_per_minute: int | None, burst: int | None
) -> None:
    """Create a key and print it once."""
    from api.keys import create_api_key

    settings = load_settings()
    migrate.upgrade(settings.db_url)

    async def run() -> str:
        db = init_database(settings.db_url)
        try:
            async with db.session() as session:
                _, key = await create_api_key(
                    session,
                    name=name,
                    scope=scope,
                    plan=plan,
                    rate_per_minute=rate_per_minute,
                    burst=burst,
                    actor="cli",
                )
                return key
        finally:
            await db.dispose()

    click.echo(asyncio.run(run()))


@keys.command("list")
def keys_list() -> None:
    """List keys (prefix and last four characters only)."""
    from models.keys import list_keys

    settings = load_settings()

    async def run() -> None:
        db = init_database(settings.db_url)
        try:
            async with db.session() as session:
                for k in await list_keys(session):
                    state = "revoked" if k.revoked_at else "active"
                    click.echo(
                        f"{k.id:>4}  {k.prefix}…{k.last4}  {k.scope:<5}  {k.plan:<10}  "
                        f"{state:<7}  {k.name}"
                    )
        finally:
            await db.dispose()

    asyncio.run(run())


@keys.command("revoke")
@click.argument("key_id", type=int)
def keys_revoke(key_id: int) -> None:
    """Revoke key KEY_ID."""
    from api.keys import revoke_api_key

    settings = load_settings()

    async def run() -> None:
        db = init_database(settings.db_url)
        try:
            async with db.session() as session:
                await revoke_api_key(session, key_id=key_id, actor="cli")
        finally:
            await db.dispose()

    asyncio.run(run())
    click.echo(f"revoked key {key_id}")


def register(main: click.Group) -> None:
    main.add_command(serve)
    main.add_command(db)
    main.add_command(keys)
