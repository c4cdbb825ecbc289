"""Signed checkpoints, the live-database verifier and the export.

A checkpoint is taken under the ledger head lock, so its tree size and root describe exactly
the entries committed before it. ``verify_database`` runs the offline verifier's checks over the
stored rows and adds what only the database has: the columns beside each entry's canonical
body, the subtree hashes stored at append time, and the head.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import orjson
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.db import get_database, utcnow
from models.ledger import merkle, store
from models.ledger.signing import Signer, load_keyring, load_signer
from models.ledger.signing import rotate as rotate_signing_key
from models.ledger.store import AuditEntry, CheckpointRow, TreeNode
from models.ledger.verify import (
    EXPORT_FORMAT,
    Checkpoint,
    EntryError,
    Keyring,
    LogChecker,
    Problem,
    Report,
    VerificationError,
    check_checkpoints,
    parse_verifier_key,
)
from models.settings import get_settings

CHUNK = 5000


def signer() -> Signer:
    settings = get_settings()
    assert settings.ledger_key_path is not None
    return load_signer(settings.ledger_key_path, settings.ledger_origin)


def keyring() -> Keyring:
    """Every key trusted to have signed a checkpoint: the keyring file plus the current key."""
    return load_keyring(get_settings().ledger_keyring_path, signer())


async def rotate_key(*, actor: str = "cli") -> tuple[str, str, CheckpointRow]:
    """Retire the signing key: a last checkpoint signed by the old key, the new key made
    current (the old public key kept in the keyring), a ``ledger_key_rotated`` entry, and a
    checkpoint signed by the new key that covers it. Returns (old, new verifier key, checkpoint).
    """
    from models.ledger import record

    settings = get_settings()
    assert settings.ledger_key_path is not None and settings.ledger_keyring_path is not None
    await make_checkpoint()
    old, new = rotate_signing_key(
        settings.ledger_key_path, settings.ledger_keyring_path, settings.ledger_origin
    )
    await record(
        "ledger_key_rotated",
        actor=actor,
        target=new.verifier_key,
        params={"previous_key": old.verifier_key, "new_key": new.verifier_key},
    )
    row = await make_checkpoint()
    return old.verifier_key, new.verifier_key, row


async def make_checkpoint(*, force: bool = False) -> CheckpointRow:
    """Sign the current tree head unless the latest checkpoint already covers it.

    Runs in its own transaction, under the head lock, so no append can slip in between reading
    the head and storing the checkpoint.
    """
    key = signer()
    async with get_database().session() as session:
        head = await store.lock_head(session)
        latest = await store.latest_checkpoint(session)
        if latest is not None and latest.tree_size == head.size and not force:
            return latest
        root = head.root
        note = key.sign_checkpoint(get_settings().ledger_origin, head.size, root)
        row = CheckpointRow(
            tree_size=head.size, root_hash=root.hex(), note=note, created_at=utcnow()
        )
        session.add(row)
    return row


def describe(row: CheckpointRow) -> dict[str, object]:
    """A checkpoint as the API publishes it, with the key that signed it (after a rotation an
    old checkpoint names its retired key, which the keyring still trusts)."""
    key = signer()
    vkey = key.verifier_key
    with contextlib.suppress(VerificationError):  # else published as stored; verify names it
        vkey = keyring().verify(row.note).signer
    _, public = parse_verifier_key(vkey)
    return {
        "checkpoint": row.note,
        "tree_size": row.tree_size,
        "root_hash": row.root_hash,
        "public_key": _b64(public),
        "verifier_key": vkey,
        "origin": get_settings().ledger_origin,
        "created_at": row.created_at.isoformat().replace("+00:00", "Z"),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- verification of the live database -------------------------------------------------------


def _columns_differ(row: AuditEntry, entry: dict) -> str | None:
    stored = {
        "ts": row.ts.strftime(store.TS_FORMAT),
        "action": row.action,
        "actor": row.actor,
        "server_id": row.server_id,
        "target": row.target,
        "params": row.params,
        "result": row.result,
        "request_id": row.request_id,
        "prev_hash": row.prev_hash,
    }
    for name, value in stored.items():
        if entry.get(name) != value:
            return f"column {name} differs from the entry's signed body"
    return None


async def _stored_nodes(session: AsyncSession, start: int, end: int) -> dict[merkle.Node, bytes]:
    """Every stored subtree hash completed by the leaves ``[start, end)``."""
    clauses = [
        and_(TreeNode.level == level, TreeNode.idx.between(start >> level, end >> level))
        for level in range(end.bit_length() + 1)
    ]
    rows = await session.execute(
        select(TreeNode.level, TreeNode.idx, TreeNode.hash).where(or_(*clauses))
    )
    return {(r.level, r.idx): bytes(r.hash) for r in rows}


async def _rows(session: AsyncSession, size: int) -> AsyncIterator[list[AuditEntry]]:
    after = -1
    while True:
        rows = list(
            (
                await session.execute(
                    select(AuditEntry)
                    .where(AuditEntry.seq > after, AuditEntry.seq < size)
                    .order_by(AuditEntry.seq)
                    .limit(CHUNK)
                )
            ).scalars()
        )
        if not rows:
            return
        yield rows
        after = rows[-1].seq
        session.expunge_all()


async def _check_rows(session: AsyncSession, checker: LogChecker, size: int) -> Problem | None:
    tree = merkle.Frontier()
    async for rows in _rows(session, size):
        stored = await _stored_nodes(session, checker.size, checker.size + len(rows))
        for row in rows:
            seq = checker.size
            if row.seq != seq:
                return Problem(seq, f"entry {seq} is missing (next stored entry is {row.seq})")
            try:
                leaf = checker.add(row.body.encode())
            except EntryError as exc:
                return Problem(exc.seq, str(exc))
            reason = _columns_differ(row, orjson.loads(row.body))
            if reason is None and row.entry_hash != leaf.hex():
                reason = "stored entry_hash is not the entry's leaf hash"
            if reason:
                return Problem(seq, reason)
            for level, idx, value in tree.append(leaf):
                if stored.get((level, idx)) != value:
                    what = "leaf hash stored when it was appended" if level == 0 else "stored tree"
                    return Problem(
                        idx << level, f"entry does not match the {what} ({level}, {idx})"
                    )
    if checker.size < size:
        return Problem(checker.size, f"entries {checker.size}..{size - 1} are missing")
    return None


async def verify_database(session: AsyncSession, *, trusted: Iterable[str] = ()) -> Report:
    """Verify every stored entry, the stored tree, the head and every checkpoint; each
    checkpoint must be signed by a key in the keyring (``Report.signers`` names them)."""
    ring = keyring()
    head = await store.read_head(session)
    notes = list(dict.fromkeys([*await store.all_checkpoints(session), *trusted]))
    checkpoints: list[Checkpoint] = []
    report = Report()
    for note in notes:
        try:
            checkpoints.append(ring.verify(note))
        except VerificationError as exc:
            size = note.split("\n")[1] if note.count("\n") > 1 else "?"
            report.problem = Problem(0, f"checkpoint at size {size}: {exc}")
            return report
    checker = LogChecker(cp.tree_size for cp in checkpoints)
    report.problem = await _check_rows(session, checker, head.size)
    report.tree_size, report.root_hash = checker.size, checker.root()
    if report.problem is None:
        report.problem = await _check_head(session, head, checker)
    if report.problem is None:
        check_checkpoints(checker, checkpoints, get_settings().ledger_origin, report)
    return report


async def _check_head(
    session: AsyncSession, head: store.Head, checker: LogChecker
) -> Problem | None:
    if head.root != checker.root() or head.last_hash != checker.prev:
        return Problem(max(head.size - 1, 0), "ledger head does not match the entries")
    beyond = (
        await session.execute(select(func.min(AuditEntry.seq)).where(AuditEntry.seq >= head.size))
    ).scalar()
    now = await store.read_head(session)
    if beyond is not None and beyond >= now.size:
        return Problem(int(beyond), "entry stored beyond the ledger head (written around the log)")
    return None


# --- export ----------------------------------------------------------------------------------


async def export_lines(checkpoint: CheckpointRow) -> AsyncIterator[bytes]:
    """The export file, in chunks: the header, then every entry up to ``checkpoint``."""
    size = checkpoint.tree_size
    key = signer()
    async with get_database().session() as session:
        header = {
            "format": EXPORT_FORMAT,
            "origin": get_settings().ledger_origin,
            "verifier_key": key.verifier_key,
            "verifier_keys": keyring().order,
            "public_key": _b64(key.public_key),
            "tree_size": size,
            "checkpoints": await store.all_checkpoints(session, max_size=size),
        }
        yield orjson.dumps(header) + b"\n"
        async for rows in _rows(session, size):
            yield b"".join(row.body.encode() + b"\n" for row in rows)


async def export(path: Path) -> CheckpointRow:
    """Write the whole log and its checkpoints to ``path`` (format: ``models.ledger.verify``)."""
    checkpoint = await make_checkpoint()
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("wb") as out:
        async for chunk in export_lines(checkpoint):
            out.write(chunk)
    tmp.replace(path)
    return checkpoint


__all__ = [
    "describe",
    "export",
    "export_lines",
    "keyring",
    "make_checkpoint",
    "parse_verifier_key",
    "rotate_key",
    "signer",
    "verify_database",
]
