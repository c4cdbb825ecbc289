"""``execflow audit verify | export | checkpoint | rotate-key | keys``: check and publish the
audit ledger, and rotate its signing key."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from api.cli import load_settings
from models.db import init_database
from models.ledger.verify import Report, VerificationError, read_keyring, verify_export

T = TypeVar("T")


def _with_database(work: Callable[[], Awaitable[T]]) -> T:
    settings = load_settings()

    async def run() -> T:
        db = init_database(settings.db_url)
        try:
            return await work()
        finally:
            await db.dispose()

    return asyncio.run(run())


def _print(report: Report) -> None:
    if report.problem is None:
        click.echo(
            f"OK: {report.tree_size} entries, root {report.root_hash.hex()}, "
            f"{report.checkpoints} signed checkpoint(s) consistent with the log"
        )
        for vkey, count in report.signers.items():
            click.echo(f"signed by {vkey}: {count} checkpoint(s)")
        for note in report.notes:
            click.echo(f"note: {note}")
    else:
        click.echo(f"FAILED at seq {report.problem.seq}: {report.problem.reason}", err=True)


@click.group()
def audit() -> None:
    """Verify, export and checkpoint the audit ledger."""


@audit.command("verify")
@click.option(
    "--export",
    "export_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Verify this export file offline instead of the live database.",
)
@click.option(
    "--checkpoint",
    "trusted",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A checkpoint saved earlier; the log must extend it. Repeatable.",
)
@click.option(
    "--key",
    "verifier_keys",
    multiple=True,
    help="Pin a trusted verifier key (<name>+<id>+<key>); repeatable (offline only).",
)
@click.option(
    "--keyring",
    "keyring_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Pin the trusted keys to a keyring file, one verifier key per line (offline only).",
)
def verify(
    export_file: Path | None,
    trusted: tuple[Path, ...],
    verifier_keys: tuple[str, ...],
    keyring_file: Path | None,
) -> None:
    """Recompute every leaf, the chain, the tree and check every signed checkpoint.

    Every checkpoint must be signed by a trusted key: on the live database the current key and
    the keyring (EXECFLOW_LEDGER_KEYRING_PATH); offline the pinned keys, else the file's header.
    Exits 0 when the log verifies, naming the key that signed the checkpoints, 1 naming the
    first bad sequence number otherwise.
    """
    notes = [p.read_text() for p in trusted]
    pinned = [*verifier_keys, *(read_keyring(keyring_file) if keyring_file else [])]
    try:
        if export_file is not None:
            report = verify_export(export_file, verifier_key=pinned or None, trusted=notes)
        else:
            from models.db import get_database
            from models.ledger.checkpoints import verify_database

            async def live() -> Report:
                async with get_database().session() as session:
                    return await verify_database(session, trusted=notes)

            report = _with_database(live)
    except (VerificationError, ValueError, KeyError) as exc:
        click.echo(f"FAILED: {exc}", err=True)
        sys.exit(1)
    _print(report)
    sys.exit(0 if report.ok else 1)


@audit.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def export(file: Path) -> None:
    """Write the log and its checkpoints to FILE (JSON Lines) for offline verification."""
    from models.ledger.checkpoints import export as export_log

    row = _with_database(lambda: export_log(file))
    click.echo(f"exported {row.tree_size} entries to {file} (root {row.root_hash})")


@audit.command("checkpoint")
@click.option("--force", is_flag=True, help="Sign even if the latest checkpoint is current.")
def checkpoint(force: bool) -> None:
    """Sign a checkpoint of the current tree and print it."""
    from models.ledger.checkpoints import make_checkpoint

    row = _with_database(lambda: make_checkpoint(force=force))
    click.echo(row.note, nl=False)


@audit.command("rotate-key")
def rotate_key() -> None:
    """Make a new Ed25519 signing key current; the old public key stays trusted.

    Signs a last checkpoint with the old key, writes both public keys to the keyring file
    (EXECFLOW_LEDGER_KEYRING_PATH), replaces the key file (EXECFLOW_LEDGER_KEY_PATH), records a
    ledger_key_rotated entry and signs a checkpoint covering it with the new key. Distribute the
    new key file and the keyring to every replica and worker.
    """
    from models.ledger.checkpoints import rotate_key as rotate

    old, new, row = _with_database(rotate)
    click.echo(f"retired key:  {old}")
    click.echo(f"current key:  {new}")
    click.echo(f"checkpoint at size {row.tree_size} signed by the new key")


@audit.command("keys")
def keys() -> None:
    """List the trusted verifier keys (the keyring and the current key)."""
    from models.ledger.checkpoints import keyring, signer

    settings = load_settings()
    current = signer().verifier_key
    for vkey in keyring().order:
        click.echo(f"{vkey}{'  (current)' if vkey == current else ''}")
    click.echo(f"keyring file: {settings.ledger_keyring_path}", err=True)


def register(main: click.Group) -> None:
    main.add_command(audit)
