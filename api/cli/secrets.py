"""``execflow secrets rotate``: a new secret-encryption key, every stored secret re-encrypted."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import sys

import click

import models
from api.cli import load_settings
from models.db import init_database
from models.errors import ExecFlowError

# Modules outside ``models`` that declare tables.
OTHER_TABLE_MODULES = ("compaction.store",)


def import_all_tables() -> None:
    """Import every module that declares tables (``models.*`` and OTHER_TABLE_MODULES), so
    ``Base.metadata`` is complete and every encrypted column is registered."""
    for info in pkgutil.walk_packages(models.__path__, "models."):
        if ".migrations" not in info.name:
            importlib.import_module(info.name)
    for name in OTHER_TABLE_MODULES:
        importlib.import_module(name)


@click.group()
def secrets() -> None:
    """Secrets at rest (the Fernet key file, EXECFLOW_SECRET_KEY_PATH)."""


@secrets.command("rotate")
@click.option(
    "--drop-old",
    is_flag=True,
    help="After re-encrypting, remove the old keys (only once every secret verifies)",
)
def secrets_rotate(drop_old: bool) -> None:
    """Put a new key first in the key file and re-encrypt every stored secret under it."""
    from models.crypto import rotate_key

    settings = load_settings()
    import_all_tables()

    async def run() -> None:
        db = init_database(settings.db_url)
        try:
            async with db.session() as session:
                report = await rotate_key(session, drop_old=drop_old)
        finally:
            await db.dispose()
        for column, count in report.reencrypted.items():
            click.echo(f"re-encrypted {count:>6}  {column}")
        kept = "old keys removed" if drop_old else "old keys kept (run with --drop-old)"
        click.echo(f"key file {settings.secret_key_path}: {report.key_count} key(s); {kept}")

    try:
        asyncio.run(run())
    except ExecFlowError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@secrets.command("drop-old")
def secrets_drop_old() -> None:
    """Remove every key but the newest, after checking every stored secret decrypts with it."""
    from models.crypto import drop_old_keys

    settings = load_settings()
    import_all_tables()

    async def run() -> int:
        db = init_database(settings.db_url)
        try:
            async with db.session() as session:
                return await drop_old_keys(session)
        finally:
            await db.dispose()

    try:
        dropped = asyncio.run(run())
    except ExecFlowError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"removed {dropped} old key(s)")


def register(main: click.Group) -> None:
    main.add_command(secrets)
