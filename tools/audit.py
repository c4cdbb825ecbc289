"""The audit ledger as a capability: query entries, prove them, publish checkpoints.

Called by the API router and by agent tools (``query_audit_log``); every answer is JSON-able and
carries what a client needs to check it against a signed checkpoint with only RFC 9162.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.errors import BadRequest, NotFound
from models.ledger import entry_dict, store
from models.ledger.checkpoints import describe, make_checkpoint
from models.ledger.merkle import leaf_hash
from models.ledger.store import AuditEntry

MAX_LIMIT = 200


def _instant(value: str | dt.datetime | None, field: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("z", "Z"))
        except ValueError:
            raise BadRequest(
                f"'{field}' is not an ISO 8601 date or time",
                fields=[{"field": field, "message": "expected ISO 8601, e.g. 2026-01-31T12:00Z"}],
            ) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be 1..{MAX_LIMIT}", fields=["limit"])
    if offset < 0:
        raise BadRequest("offset must not be negative", fields=["offset"])


async def latest_checkpoint(session: AsyncSession) -> dict[str, Any]:
    """The newest signed checkpoint (one is made if none exists yet)."""
    row = await store.latest_checkpoint(session)
    if row is None:
        row = await make_checkpoint()
    return describe(row)


async def query_audit_log(
    session: AsyncSession,
    *,
    action: str | None = None,
    server_id: int | None = None,
    from_: str | dt.datetime | None = None,
    to: str | dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Entries matching the filters, newest first, with the total and the latest checkpoint."""
    _page(limit, offset)
    start, end = _instant(from_, "from"), _instant(to, "to")
    if start and end and start > end:
        raise BadRequest("'from' is after 'to'", fields=["from", "to"])
    query: Select[Any] = select(AuditEntry)
    if action:
        query = query.where(AuditEntry.action == action)
    if server_id is not None:
        query = query.where(AuditEntry.server_id == server_id)
    if start:
        query = query.where(AuditEntry.ts >= start)
    if end:
        query = query.where(AuditEntry.ts <= end)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    rows = await session.execute(query.order_by(AuditEntry.seq.desc()).limit(limit).offset(offset))
    return {
        "entries": [entry_dict(r) for r in rows.scalars()],
        "total": int(total),
        "limit": limit,
        "offset": offset,
        "checkpoint": await latest_checkpoint(session),
    }


async def current_checkpoint(session: AsyncSession) -> dict[str, Any]:
    """A signed checkpoint of the tree as it is now (made on demand if the log has grown)."""
    return describe(await make_checkpoint())


async def _size(session: AsyncSession, tree_size: int | None, field: str, low: int = 1) -> int:
    size = (await store.read_head(session)).size
    if tree_size is None:
        return size
    if not low <= tree_size <= size:
        raise BadRequest(f"{field} must be {low}..{size} (the current tree size)", fields=[field])
    return tree_size


async def get_entry_with_proof(
    session: AsyncSession, *, seq: int, tree_size: int | None = None
) -> dict[str, Any]:
    """One entry, its leaf hash and its RFC 9162 inclusion proof in the tree of ``tree_size``."""
    row = await session.get(AuditEntry, seq) if 0 <= seq < 2**31 else None
    if row is None:
        raise NotFound(f"audit entry {seq} not found")
    size = await _size(session, tree_size, "tree_size")
    if seq >= size:
        raise BadRequest(f"entry {seq} is not in a tree of size {size}", fields=["tree_size"])
    proof, root = await store.inclusion(session, seq, size)
    return {
        "entry": entry_dict(row),
        "leaf_hash": leaf_hash(row.body.encode()).hex(),
        "tree_size": size,
        "root_hash": root.hex(),
        "inclusion_proof": [p.hex() for p in proof],
    }


async def get_consistency(
    session: AsyncSession, *, from_size: int | None = None, to_size: int | None = None
) -> dict[str, Any]:
    """An RFC 9162 consistency proof that the tree of ``to_size`` (default: now) extends that of
    ``from_size`` (default: the latest signed checkpoint). Size 0, the empty tree, is a prefix
    of every tree; its proof is empty."""
    new = await _size(session, to_size, "to_size", low=0)
    if from_size is None:
        latest = await store.latest_checkpoint(session)
        from_size = min(latest.tree_size, new) if latest else 0
    if not 0 <= from_size <= new:
        raise BadRequest(f"from_size must be 0..{new}", fields=["from_size"])
    proof, old_root, new_root = await store.consistency(session, from_size, new)
    return {
        "from_size": from_size,
        "to_size": new,
        "from_root": old_root.hex(),
        "to_root": new_root.hex(),
        "consistency_proof": [p.hex() for p in proof],
    }
