"""``execflow db export`` / ``execflow db restore``: a portable logical dump of the database.

The dump is gzip-compressed JSON Lines, independent of the backend (SQLite -> PostgreSQL and
back). Line 1 is the manifest::

    {"format": "execflow-db-dump/1", "created_at", "source_dialect", "alembic_revision",
     "tables": {name: {"columns": [...], "rows": n, "sha256": hex}, ...},
     "ledger": {"tree_size", "root_hash", "checkpoint": note, "signed_by", "verifier_keys"},
     "not_included": [tables in the database that no ExecFlow model owns]}

then, per table in foreign-key order, a line ``{"table": name, "rows": n}`` followed by one JSON
array per row (values in ``columns`` order, rows in primary-key order; timestamps ISO 8601 UTC,
binary base64, JSON columns as JSON). A table's ``sha256`` covers exactly its row lines, each
with its newline. Values are copied as stored: encrypted columns stay ciphertext, so the dump
is only as sensitive as the database and restoring it needs the same secret key file.

Restore checks the manifest (format, alembic revision), refuses a target that holds data, and
then inserts everything in ONE transaction: the row counts and hashes of the file, the same
hashes recomputed from what the target database stores afterwards, the ledger (every entry,
tree node and checkpoint; the log must extend the dump's last signed checkpoint, verified
against the ledger keyring) and the decryptability of every encrypted column are all checked
before the commit, so a failure leaves the target exactly as empty as it was.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    Table,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.types import TypeDecorator

from models.db import Base, Database, utcnow
from models.errors import ExecFlowError

FORMAT = "execflow-db-dump/1"
BATCH = 1000
# Rows that migrations insert into an otherwise empty database, and the condition under which
# such a row is still untouched (restore overwrites them).
SEEDED = {"audit_head": "size = 0", "vaultshield_state": "version = 1"}
# Other owners' tables that may live in the same database and are not ExecFlow's data.
FOREIGN = {"alembic_version"}

Progress = Callable[[str, int], None]  # (table, rows just done)


class DumpError(ExecFlowError):
    """A dump that cannot be written or restored; ``exit_code`` for the command line."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Exit codes of ``execflow db restore``.
EXIT_BAD_DUMP = 3  # not a dump, corrupted, counts or hashes do not match
EXIT_REVISION = 4  # schema revision of the dump and the target differ
EXIT_NOT_EMPTY = 5  # the target database holds data
EXIT_VERIFY = 6  # restored rows differ, the ledger or the secrets do not verify


def tables() -> list[Table]:
    """Every table of ``Base.metadata`` in foreign-key order. The caller imports every module
    that declares tables first (``api.cli.secrets.import_all_tables``)."""
    return list(Base.metadata.sorted_tables)


def _json_columns(table: Table) -> list[int]:
    return [i for i, c in enumerate(table.columns) if isinstance(c.type, JSON)]


def _insert_table(table: Table) -> Table:
    """``table`` with JSON columns that store ``None`` as SQL NULL (and ``JSON.NULL`` as JSON
    null), so both kinds of null survive a restore as they were."""
    shadow_columns = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, JSON):
            kind = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
        shadow_columns.append(Column(column.name, kind, primary_key=column.primary_key))
    return Table(table.name, MetaData(), *shadow_columns)


# --- value encoding --------------------------------------------------------------------------


def _kind(table: Table, column: str) -> str:
    kind = table.c[column].type
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, DateTime):
        return "datetime"
    if isinstance(kind, LargeBinary):
        return "bytes"
    return "plain"


def _encoder(table: Table, columns: list[str]) -> Callable[[Any], bytes]:
    """A row (the table's columns, then one ``IS NULL`` flag per JSON column) as a line.

    A JSON column's SQL NULL is written ``null``; a stored JSON ``null`` is written ``null``
    too and its column index listed in a trailing ``{"json_null": [...]}`` element."""
    kinds = [_kind(table, c) for c in columns]
    json_columns = _json_columns(table)
    width = len(columns)

    def encode(row: Any) -> bytes:
        values: list[Any] = []
        flags = row[width:]
        json_null = [
            i
            for i, is_sql_null in zip(json_columns, flags, strict=True)
            if row[i] is None and not is_sql_null
        ]
        for kind, value in zip(kinds, row[:width], strict=True):
            if value is None:
                values.append(None)
            elif kind == "datetime":
                values.append(value.astimezone(dt.UTC).isoformat())
            elif kind == "bytes":
                values.append(base64.b64encode(bytes(value)).decode())
            else:
                values.append(value)
        if json_null:
            values.append({"json_null": json_null})
        return orjson.dumps(values, option=orjson.OPT_SORT_KEYS) + b"\n"

    return encode


def _decoder(table: Table, columns: list[str]) -> Callable[[list[Any]], dict[str, Any]]:
    kinds = [_kind(table, c) for c in columns]

    def decode(values: list[Any]) -> dict[str, Any]:
        json_null: list[int] = []
        if len(values) == len(columns) + 1 and isinstance(values[-1], dict):
            json_null = list(values.pop()["json_null"])
        if len(values) != len(columns):
            raise DumpError(f"{table.name}: a row has {len(values)} values", EXIT_BAD_DUMP)
        for i in json_null:
            values[i] = JSON.NULL
        row: dict[str, Any] = {}
        for name, kind, value in zip(columns, kinds, values, strict=True):
            if value is not None and kind == "datetime":
                value = dt.datetime.fromisoformat(value)
            elif value is not None and kind == "bytes":
                value = base64.b64decode(value)
            row[name] = value
        return row

    return decode


async def _table_rows(conn: AsyncConnection, table: Table) -> AsyncIterator[list[Any]]:
    """Every row of ``table`` in primary-key order, in batches."""
    order = list(table.primary_key.columns) or list(table.columns)
    flags = [table.columns[i].is_(None) for i in _json_columns(table)]
    result = await conn.stream(select(*table.columns, *flags).order_by(*order))
    async for batch in result.partitions(BATCH):
        yield list(batch)


# --- export ----------------------------------------------------------------------------------


@dataclass
class ExportReport:
    path: Path
    tables: dict[str, int]
    ledger_size: int
    not_included: list[str] = field(default_factory=list)


async def _revision(conn: AsyncConnection) -> list[str] | None:
    names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    if "alembic_version" not in names:
        return None
    rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
    return sorted(r[0] for r in rows)


async def _count(conn: AsyncConnection, table: Table) -> int:
    return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def export_database(
    db: Database, path: Path, *, progress: Progress | None = None, on_total: Any = None
) -> ExportReport:
    """Write the whole database to ``path`` as one consistent snapshot (see the module doc)."""
    from models.ledger.checkpoints import keyring, make_checkpoint

    await make_checkpoint()  # the dump carries a checkpoint covering everything logged so far
    all_tables = tables()
    body = path.with_name(path.name + ".body.partial")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": utcnow().isoformat(),
        "source_dialect": db.dialect,
        "tables": {},
    }
    async with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            await conn.begin()
        else:
            await conn.exec_driver_sql("BEGIN")  # one read snapshot (WAL) for every table
        try:
            manifest["alembic_revision"] = await _revision(conn)
            if manifest["alembic_revision"] is None:
                raise DumpError("the database is not migrated (no alembic_version table)")
            known = {t.name for t in all_tables}
            present = await conn.run_sync(lambda c: inspect(c).get_table_names())
            manifest["not_included"] = sorted(set(present) - known - FOREIGN)
            counts = {t.name: await _count(conn, t) for t in all_tables}
            if on_total is not None:
                on_total(sum(counts.values()))
            with gzip.open(body, "wb", compresslevel=6) as out:
                for table in all_tables:
                    manifest["tables"][str(table.name)] = await _export_table(
                        conn, table, counts[table.name], out, progress
                    )
            manifest["ledger"] = await _ledger_summary(conn, keyring())
        finally:
            await conn.rollback()
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("wb") as final:
        # two gzip members: the manifest first (``zcat FILE | head -1`` reads it), then the rows
        final.write(gzip.compress(orjson.dumps(manifest) + b"\n"))
        with body.open("rb") as rows:
            shutil.copyfileobj(rows, final)
    body.unlink()
    tmp.replace(path)
    return ExportReport(
        path,
        {n: t["rows"] for n, t in manifest["tables"].items()},
        manifest["ledger"]["tree_size"],
        manifest["not_included"],
    )


async def _export_table(
    conn: AsyncConnection,
    table: Table,
    count: int,
    out: gzip.GzipFile,
    progress: Progress | None,
) -> dict[str, Any]:
    """Stream one table's section (``count`` was read in the same snapshot)."""
    columns = [str(c.name) for c in table.columns]
    encode = _encoder(table, columns)
    digest = hashlib.sha256()
    rows = 0
    out.write(orjson.dumps({"table": str(table.name), "rows": count}) + b"\n")
    async for batch in _table_rows(conn, table):
        lines = [encode(row) for row in batch]
        for line in lines:
            digest.update(line)
        out.writelines(lines)
        rows += len(lines)
        if progress is not None:
            progress(table.name, len(lines))
    if rows != count:  # not a snapshot after all: refuse to write an inconsistent dump
        raise DumpError(f"{table.name} changed during the export ({count} -> {rows} rows)")
    return {"columns": columns, "rows": rows, "sha256": digest.hexdigest()}


async def _ledger_summary(conn: AsyncConnection, ring: Any) -> dict[str, Any]:
    from models.ledger.store import CheckpointRow, LedgerHead
    from models.ledger.verify import VerificationError

    head = (await conn.execute(select(LedgerHead.size).where(LedgerHead.id == 1))).scalar_one()
    latest = (
        await conn.execute(
            select(CheckpointRow.tree_size, CheckpointRow.root_hash, CheckpointRow.note)
            .order_by(CheckpointRow.id.desc())
            .limit(1)
        )
    ).first()
    summary: dict[str, Any] = {"tree_size": int(head), "verifier_keys": ring.order}
    if latest is not None:
        summary.update(checkpoint=latest.note, checkpoint_size=int(latest.tree_size))
        summary["root_hash"] = latest.root_hash
        try:
            summary["signed_by"] = ring.verify(latest.note).signer
        except VerificationError as exc:
            raise DumpError(f"the latest ledger checkpoint does not verify: {exc}") from exc
    return summary


# --- restore ---------------------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        with gzip.open(path, "rb") as handle:
            first = handle.readline()
        manifest = orjson.loads(first)
    except (OSError, EOFError, orjson.JSONDecodeError) as exc:
        raise DumpError(f"{path} is not an ExecFlow dump: {exc}", EXIT_BAD_DUMP) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DumpError(f"{path} is not an {FORMAT} file", EXIT_BAD_DUMP)
    return manifest


def _sections(path: Path) -> Iterator[tuple[str, int, Iterator[bytes]]]:
    """(table, rows, row lines) for each table section of the dump, in file order."""
    with gzip.open(path, "rb") as handle:
        handle.readline()  # the manifest
        while True:
            header = handle.readline()
            if not header:
                return
            try:
                section = orjson.loads(header)
                name, rows = str(section["table"]), int(section["rows"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DumpError("dump is corrupted: bad table header", EXIT_BAD_DUMP) from exc

            def lines(count: int = rows) -> Iterator[bytes]:
                for _ in range(count):
                    line = handle.readline()
                    if not line.endswith(b"\n"):
                        raise DumpError("dump is truncated", EXIT_BAD_DUMP)
                    yield line

            yield name, rows, lines()


@dataclass
class RestoreReport:
    tables: dict[str, int]
    ledger_size: int
    checkpoints: int
    signers: dict[str, int]


async def _check_target(conn: AsyncConnection, manifest: dict[str, Any]) -> None:
    revision = await _revision(conn)
    if revision is None:
        raise DumpError(
            "the target database is not migrated: run `execflow db upgrade` first", EXIT_REVISION
        )
    if revision != manifest.get("alembic_revision"):
        raise DumpError(
            f"schema revision mismatch: the dump is at {manifest.get('alembic_revision')}, the "
            f"target database at {revision}; restore with the ExecFlow version that wrote the "
            "dump (then upgrade), or migrate the target to the dump's revision",
            EXIT_REVISION,
        )
    busy = []
    for table in tables():
        where = f" WHERE NOT ({SEEDED[table.name]})" if table.name in SEEDED else ""
        count = (await conn.execute(text(f"SELECT count(*) FROM {table.name}{where}"))).scalar()
        if count:
            busy.append(f"{table.name} ({count} rows)")
    if busy:
        raise DumpError(
            "the target database is not empty: " + ", ".join(busy) + "; restore only into a "
            "freshly migrated database",
            EXIT_NOT_EMPTY,
        )


async def restore_database(
    db: Database, path: Path, *, progress: Progress | None = None, actor: str = "cli"
) -> RestoreReport:
    """Restore the dump at ``path`` into the (empty, migrated) database ``db``; see module doc.

    After the commit a ``database_restored`` entry (the dump's time, source backend and
    ledger checkpoint) is appended, so the restore itself is on the record."""
    manifest = read_manifest(path)
    by_name = {t.name: t for t in tables()}
    expected = manifest.get("tables") or {}
    if set(expected) != set(by_name):
        missing, extra = set(by_name) - set(expected), set(expected) - set(by_name)
        raise DumpError(
            f"the dump's tables differ from this version's: missing {sorted(missing)}, "
            f"unknown {sorted(extra)}",
            EXIT_REVISION,
        )
    async with db.engine.connect() as conn, conn.begin():
        if db.dialect == "sqlite":
            # The write lock from the start, so the emptiness check holds until the commit.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            await conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        await _check_target(conn, manifest)
        seen = []
        for name, rows, lines in _sections(path):
            if name not in by_name or name in seen:
                raise DumpError(f"dump is corrupted: unexpected table {name}", EXIT_BAD_DUMP)
            seen.append(name)
            await _restore_table(conn, by_name[name], expected[name], rows, lines, progress)
        if set(seen) != set(by_name):
            raise DumpError(
                f"dump is truncated: no rows section for {sorted(set(by_name) - set(seen))}",
                EXIT_BAD_DUMP,
            )
        for name in seen:
            await _check_stored(conn, by_name[name], expected[name])
        if db.dialect == "postgresql":
            await _reset_sequences(conn, list(by_name.values()))
        report = await _verify_ledger(conn, manifest)
        await _verify_secrets(conn)
        report.tables = {n: int(t["rows"]) for n, t in expected.items()}
    await _record_restore(db, manifest, actor)
    return report


async def _record_restore(db: Database, manifest: dict[str, Any], actor: str) -> None:
    from models.ledger import store

    ledger = manifest.get("ledger") or {}
    draft = store.Draft(
        ts=utcnow(),
        action="database_restored",
        actor=actor,
        server_id=None,
        target=None,
        params={
            "dump_created_at": manifest.get("created_at"),
            "source_dialect": manifest.get("source_dialect"),
            "alembic_revision": manifest.get("alembic_revision"),
            "checkpoint_size": ledger.get("checkpoint_size"),
            "checkpoint_root": ledger.get("root_hash"),
        },
        result={"rows": sum(int(t["rows"]) for t in manifest["tables"].values())},
        request_id=None,
    )
    async with db.session() as session:
        await store.append(session, [draft])


async def _restore_table(
    conn: AsyncConnection,
    table: Table,
    expected: dict[str, Any],
    rows: int,
    lines: Iterator[bytes],
    progress: Progress | None,
) -> None:
    columns = list(expected.get("columns") or [])
    if columns != [c.name for c in table.columns]:
        raise DumpError(
            f"{table.name}: the dump's columns differ from this version's", EXIT_REVISION
        )
    if rows != expected.get("rows"):
        raise DumpError(f"dump is corrupted: {table.name} row count differs", EXIT_BAD_DUMP)
    decode = _decoder(table, columns)
    digest = hashlib.sha256()
    batch: list[dict[str, Any]] = []
    seeded = table.name in SEEDED
    target = _insert_table(table)
    for line in lines:
        digest.update(line)
        try:
            values = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise DumpError(f"dump is corrupted in {table.name}", EXIT_BAD_DUMP) from exc
        if not isinstance(values, list):
            raise DumpError(f"dump is corrupted in {table.name}", EXIT_BAD_DUMP)
        batch.append(decode(values))
        if len(batch) >= BATCH:
            await _write(conn, target, batch, seeded)
            if progress is not None:
                progress(table.name, len(batch))
            batch = []
    if digest.hexdigest() != expected.get("sha256"):
        raise DumpError(
            f"dump is corrupted: {table.name}'s rows do not match the manifest's SHA-256",
            EXIT_BAD_DUMP,
        )
    if batch:
        await _write(conn, target, batch, seeded)
        if progress is not None:
            progress(table.name, len(batch))


async def _write(
    conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], seeded: bool
) -> None:
    if not seeded:
        await conn.execute(insert(table), rows)
        return
    # Rows a migration inserted: overwrite them by primary key (audit_head cannot be deleted).
    keys = [c.name for c in table.primary_key.columns]
    for row in rows:
        where = [table.c[k] == row[k] for k in keys]
        done = await conn.execute(update(table).where(*where).values(row))
        if not done.rowcount:
            await conn.execute(insert(table), [row])


async def _check_stored(conn: AsyncConnection, table: Table, expected: dict[str, Any]) -> None:
    """Re-read what the target stored and hash it as the export did: values survived the
    backend (types, precision, JSON) exactly."""
    columns = [str(c.name) for c in table.columns]
    encode = _encoder(table, columns)
    digest = hashlib.sha256()
    async for batch in _table_rows(conn, table):
        for row in batch:
            digest.update(encode(row))
    if digest.hexdigest() != expected["sha256"]:
        raise DumpError(
            f"{table.name}: the restored rows differ from the dump (SHA-256 of the stored "
            "values does not match); nothing was restored",
            EXIT_VERIFY,
        )


async def _reset_sequences(conn: AsyncConnection, all_tables: list[Table]) -> None:
    """Point each serial/identity sequence past the restored ids (PostgreSQL)."""
    for table in all_tables:
        for column in table.primary_key.columns:
            sequence = (
                await conn.execute(
                    text("SELECT pg_get_serial_sequence(:t, :c)"),
                    {"t": table.name, "c": column.name},
                )
            ).scalar()
            if sequence is None:
                continue
            top = (await conn.execute(select(func.max(column)))).scalar()
            await conn.execute(
                text("SELECT setval(CAST(:s AS regclass), :v, :called)"),
                {"s": sequence, "v": int(top) if top is not None else 1, "called": top is not None},
            )


async def _verify_ledger(conn: AsyncConnection, manifest: dict[str, Any]) -> RestoreReport:
    from models.ledger.checkpoints import verify_database

    ledger = manifest.get("ledger") or {}
    trusted = [ledger["checkpoint"]] if ledger.get("checkpoint") else []
    session = AsyncSession(bind=conn)
    try:
        report = await verify_database(session, trusted=trusted)
    finally:
        await session.close()
    if not report.ok:
        raise DumpError(
            f"the restored ledger does not verify against the dump's last checkpoint: "
            f"{report.problem}; nothing was restored",
            EXIT_VERIFY,
        )
    if report.tree_size != ledger.get("tree_size"):
        raise DumpError(
            f"the restored ledger holds {report.tree_size} entries, the manifest says "
            f"{ledger.get('tree_size')}",
            EXIT_VERIFY,
        )
    return RestoreReport({}, report.tree_size, report.checkpoints, dict(report.signers))


async def _verify_secrets(conn: AsyncConnection) -> None:
    """Every encrypted value must decrypt with the configured key file (which, like the ledger
    keys, is not in the dump): better to refuse now than to find out at the first SSH call."""
    from models.crypto import ENCRYPTED_COLUMNS, column_label, decrypt_secret

    for attribute in ENCRYPTED_COLUMNS:
        (pk,) = attribute.class_.__mapper__.primary_key
        rows = await conn.execute(select(pk, attribute).where(attribute.is_not(None)))
        for row_id, token in rows:
            try:
                decrypt_secret(token)
            except ExecFlowError as exc:
                raise DumpError(
                    f"{column_label(attribute)} row {row_id} cannot be decrypted with the "
                    "configured secret key file (EXECFLOW_SECRET_KEY_PATH): install the key "
                    "file the dump was made with; nothing was restored",
                    EXIT_VERIFY,
                ) from exc
