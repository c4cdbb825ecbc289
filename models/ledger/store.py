"""Ledger tables and the queries behind appends, roots, proofs and checkpoints.

Appends are serialised by the single ``audit_head`` row: a writer's first statement in its
transaction updates it, which takes PostgreSQL's row lock (held to commit) and SQLite's write
lock (the effect of BEGIN IMMEDIATE). The head carries the tree's right edge (``frontier``), so
an append reads one row, writes its entries and the subtree hashes they complete, and commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, utcnow
from models.ledger import merkle
from models.ledger.canonical import canonical_json
from models.ledger.merkle import Frontier, Node

ZERO_HASH = "0" * 64
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class AuditEntry(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    ts: Mapped[dt.datetime] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    server_id: Mapped[int | None] = mapped_column(index=True, default=None)
    target: Mapped[str | None] = mapped_column(String(512), default=None)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))  # RFC 9162 leaf hash of ``body``
    body: Mapped[str] = mapped_column(Text)  # the entry's RFC 8785 canonical JSON


class TreeNode(Base):
    __tablename__ = "audit_tree"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LedgerHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    last_hash: Mapped[str] = mapped_column(String(64))


class CheckpointRow(Base):
    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    tree_size: Mapped[int] = mapped_column(BigInteger, index=True)
    root_hash: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True)
class Draft:
    """An entry before the writer gives it a place: everything but seq and prev_hash."""

    ts: dt.datetime
    action: str
    actor: str
    server_id: int | None
    target: str | None
    params: dict[str, Any]
    result: dict[str, Any]
    request_id: str | None


@dataclass(frozen=True)
class Head:
    size: int
    frontier: Frontier
    last_hash: str

    @property
    def root(self) -> bytes:
        return self.frontier.root()


def iso_ts(ts: dt.datetime) -> str:
    """``2026-01-31T12:00:00.000000Z``: UTC, always with microseconds (== TS_FORMAT)."""
    return ts.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def entry_document(draft: Draft, seq: int, prev_hash: str) -> dict[str, Any]:
    """The entry exactly as it is hashed, stored and served."""
    return {
        "seq": seq,
        "ts": iso_ts(draft.ts),
        "action": draft.action,
        "actor": draft.actor,
        "server_id": draft.server_id,
        "target": draft.target,
        "params": draft.params,
        "result": draft.result,
        "request_id": draft.request_id,
        "prev_hash": prev_hash,
    }


async def lock_head(session: AsyncSession) -> Head:
    """Take the ledger's write lock (held until the transaction ends) and read the head."""
    await session.execute(update(LedgerHead).where(LedgerHead.id == 1).values(size=LedgerHead.size))
    return await read_head(session)


async def read_head(session: AsyncSession) -> Head:
    row = (
        await session.execute(
            select(LedgerHead.size, LedgerHead.frontier, LedgerHead.last_hash).where(
                LedgerHead.id == 1
            )
        )
    ).one()
    return Head(row.size, Frontier.unpack(row.size, row.frontier), row.last_hash)


async def append(session: AsyncSession, drafts: Sequence[Draft]) -> list[int]:
    """Append ``drafts`` in order inside the caller's transaction; return their seqs."""
    head = await lock_head(session)
    frontier, prev = head.frontier, head.last_hash
    entries: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    for draft in drafts:
        seq = frontier.size
        body = canonical_json(entry_document(draft, seq, prev))
        leaf = merkle.leaf_hash(body)
        nodes += [{"level": lv, "idx": i, "hash": h} for lv, i, h in frontier.append(leaf)]
        entries.append(
            {
                "seq": seq,
                "ts": draft.ts,
                "action": draft.action,
                "actor": draft.actor,
                "server_id": draft.server_id,
                "target": draft.target,
                "params": draft.params,
                "result": draft.result,
                "request_id": draft.request_id,
                "prev_hash": prev,
                "entry_hash": leaf.hex(),
                "body": body.decode(),
            }
        )
        prev = leaf.hex()
    await _insert(session, entries, nodes)
    await session.execute(
        update(LedgerHead)
        .where(LedgerHead.id == 1)
        .values(size=frontier.size, frontier=frontier.pack(), last_hash=prev)
    )
    return [int(e["seq"]) for e in entries]


_SQLITE_ENTRY = (
    "INSERT INTO audit_log (seq, ts, action, actor, server_id, target, params, result, "
    "request_id, prev_hash, entry_hash, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SQLITE_NODE = "INSERT INTO audit_tree (level, idx, hash) VALUES (?, ?, ?)"


async def _insert(
    session: AsyncSession, entries: list[dict[str, Any]], nodes: list[dict[str, Any]]
) -> None:
    """Bulk-insert rows. On SQLite straight through the driver, pre-encoded as SQLAlchemy's
    types would store them (per-row type processing was most of an append's cost)."""
    connection = await session.connection()
    if connection.dialect.name != "sqlite":
        await connection.execute(insert(AuditEntry), entries)
        await connection.execute(insert(TreeNode), nodes)
        return
    await connection.exec_driver_sql(
        _SQLITE_ENTRY,
        [
            (
                e["seq"],
                iso_ts(e["ts"])[:-1].replace("T", " "),  # SQLAlchemy's SQLite DATETIME text
                e["action"],
                e["actor"],
                e["server_id"],
                e["target"],
                orjson.dumps(e["params"]).decode(),
                orjson.dumps(e["result"]).decode(),
                e["request_id"],
                e["prev_hash"],
                e["entry_hash"],
                e["body"],
            )
            for e in entries
        ],
    )
    await connection.exec_driver_sql(
        _SQLITE_NODE, [(n["level"], n["idx"], n["hash"]) for n in nodes]
    )


async def get_nodes(session: AsyncSession, wanted: set[Node]) -> dict[Node, bytes]:
    """Stored subtree hashes by (level, index), in one query."""
    if not wanted:
        return {}
    # An OR of primary-key equalities: both SQLite and PostgreSQL answer it with index lookups
    # (SQLite does not use the index for a row-value IN list).
    rows = await session.execute(
        select(TreeNode.level, TreeNode.idx, TreeNode.hash).where(
            or_(*(and_(TreeNode.level == lv, TreeNode.idx == i) for lv, i in sorted(wanted)))
        )
    )
    found = {(r.level, r.idx): bytes(r.hash) for r in rows}
    if len(found) != len(wanted):
        raise LookupError(f"ledger tree is missing nodes {sorted(wanted - found.keys())[:4]}")
    return found


async def inclusion(session: AsyncSession, seq: int, tree_size: int) -> tuple[list[bytes], bytes]:
    """(inclusion proof, root) for ``seq`` in the tree of ``tree_size`` (already committed)."""
    ranges = merkle.inclusion_ranges(seq, tree_size)
    whole = (0, tree_size)
    nodes = await get_nodes(session, merkle.nodes_for([*ranges, whole]))
    return merkle.hash_ranges(ranges, nodes), merkle.hash_ranges([whole], nodes)[0]


async def consistency(
    session: AsyncSession, old: int, new: int
) -> tuple[list[bytes], bytes, bytes]:
    """(consistency proof, old root, new root) between two committed tree sizes."""
    ranges = merkle.consistency_ranges(old, new)
    roots = [(0, old), (0, new)]
    nodes = await get_nodes(session, merkle.nodes_for([*ranges, *roots]))
    old_root, new_root = merkle.hash_ranges(roots, nodes)
    return merkle.hash_ranges(ranges, nodes), old_root, new_root


async def latest_checkpoint(session: AsyncSession) -> CheckpointRow | None:
    return (
        await session.execute(select(CheckpointRow).order_by(CheckpointRow.id.desc()).limit(1))
    ).scalar()


async def all_checkpoints(session: AsyncSession, *, max_size: int | None = None) -> list[str]:
    query = select(CheckpointRow.note).order_by(CheckpointRow.id)
    if max_size is not None:
        query = query.where(CheckpointRow.tree_size <= max_size)
    return list((await session.execute(query)).scalars())


def entry_of(row: AuditEntry) -> dict[str, Any]:
    entry: dict[str, Any] = orjson.loads(row.body)
    return entry
