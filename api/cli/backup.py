"""``execflow db export FILE`` and ``execflow db restore FILE`` (format: ``models.backup``).

Added to the ``db`` group by ``api.cli.platform``. Progress goes to stderr, results to stdout.
Restore exit codes: 0 restored, 3 not a dump / corrupted, 4 schema revision mismatch, 5 target
not empty, 6 restored data, ledger or secrets do not verify (nothing restored for 3-6).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from api.cli import load_settings
from api.cli.secrets import import_all_tables
from models.db import init_database


class _Progress:
    """Progress on stderr once the total is known: a click progress bar on a terminal, else a
    count line at every tenth of the rows (logs of non-interactive runs show it too)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None
        self.total_rows = 0
        self.done = 0
        self.shown = 0

    def total(self, rows: int) -> None:
        self.total_rows = rows
        if sys.stderr.isatty():
            self.bar = click.progressbar(
                length=max(rows, 1), label=self.label, file=sys.stderr, show_pos=True
            )
            self.bar.__enter__()
        else:
            click.echo(f"{self.label}: {rows} rows", err=True)

    def __call__(self, table: str, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
            return
        tenth = self.done * 10 // max(self.total_rows, 1)
        if tenth > self.shown:
            self.shown = tenth
            click.echo(f"{self.label}: {self.done}/{self.total_rows} rows ({table})", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@click.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def db_export(file: Path) -> None:
    """Write every table (the ledger included) to FILE, a portable gzip JSON Lines dump.

    Encrypted columns stay encrypted. Line 1 is a manifest: schema revision, row counts and
    SHA-256 per table, the ledger's latest signed checkpoint.
    """
    from models.backup import DumpError, export_database

    settings = load_settings()
    import_all_tables()
    progress = _Progress("exporting")

    async def run() -> Any:
        db = init_database(settings.db_url)
        try:
            return await export_database(db, file, progress=progress, on_total=progress.total)
        finally:
            progress.close()
            await db.dispose()

    try:
        report = asyncio.run(run())
    except DumpError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    rows = sum(report.tables.values())
    click.echo(
        f"exported {rows} rows from {len(report.tables)} tables to {file} "
        f"(ledger: {report.ledger_size} entries)"
    )
    if report.not_included:
        click.echo(f"not included (not ExecFlow's tables): {', '.join(report.not_included)}")


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def db_restore(file: Path) -> None:
    """Restore FILE (from `execflow db export`) into an empty, migrated database.

    Refuses a non-empty target or a schema revision mismatch; restores in one transaction and
    verifies row hashes, the ledger (against the dump's last signed checkpoint, with the ledger
    keyring) and that every secret decrypts with the configured key before committing.
    """
    from models.backup import DumpError, read_manifest, restore_database

    settings = load_settings()
    import_all_tables()
    progress = _Progress("restoring")

    async def run() -> Any:
        db = init_database(settings.db_url)
        try:
            manifest = read_manifest(file)
            progress.total(sum(int(t.get("rows", 0)) for t in manifest["tables"].values()))
            return await restore_database(db, file, progress=progress)
        finally:
            progress.close()
            await db.dispose()

    try:
        report = asyncio.run(run())
    except DumpError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo(
        f"restored {sum(report.tables.values())} rows into {len(report.tables)} tables; "
        f"ledger verified: {report.ledger_size} entries, {report.checkpoints} checkpoint(s)"
    )
    for vkey, count in report.signers.items():
        click.echo(f"  signed by {vkey}: {count} checkpoint(s)")
