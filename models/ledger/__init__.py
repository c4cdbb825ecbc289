"""The audit ledger: every state-changing action, from any entry point, appends one entry.

``record`` is the one function every part of the system calls. This first version keeps a
SHA-256 hash chain in a single table; the Merkle transparency log (issue 3) replaces the
storage behind the same signature.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from models.db import Base, JSONType, get_database, utcnow

REDACTED = "[REDACTED]"
_SECRET_WORDS = (
    "password",
    "secret",
    "token",
    "private_key",
    "api_key",
    "authorization",
    "passphrase",
)


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
    entry_hash: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking field replaced by ``[REDACTED]``."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if any(w in str(k).lower() for w in _SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


_lock = asyncio.Lock()


async def record(
    action: str,
    *,
    actor: str,
    server_id: int | None = None,
    target: str | None = None,
    params: Mapping[str, Any] | None = None,
    result: Mapping[str, Any] | None = None,
    request_id: str | None = None,
) -> int:
    """Append one entry and return its sequence number once it is durably stored."""
    async with _lock, get_database().session() as session:
        last = (
            await session.execute(select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(1))
        ).scalar()
        seq = 0 if last is None else last.seq + 1
        prev_hash = "0" * 64 if last is None else last.entry_hash
        entry = {
            "seq": seq,
            "ts": utcnow().isoformat().replace("+00:00", "Z"),
            "action": action,
            "actor": actor,
            "server_id": server_id,
            "target": target,
            "params": redact(dict(params or {})),
            "result": redact(dict(result or {})),
            "request_id": request_id,
            "prev_hash": prev_hash,
        }
        body = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        session.add(
            AuditEntry(
                seq=seq,
                ts=dt.datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")),
                action=action,
                actor=actor,
                server_id=server_id,
                target=target,
                params=entry["params"],
                result=entry["result"],
                request_id=request_id,
                prev_hash=prev_hash,
                entry_hash=hashlib.sha256(b"\x00" + body.encode()).hexdigest(),
                body=body,
            )
        )
    return seq


async def count_entries() -> int:
    async with get_database().session() as session:
        return int(
            (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
        )


def entry_dict(row: AuditEntry) -> dict[str, Any]:
    """An entry as plain data (what webhooks and exports see)."""
    return {
        "seq": row.seq,
        "ts": row.ts.isoformat().replace("+00:00", "Z"),
        "action": row.action,
        "actor": row.actor,
        "server_id": row.server_id,
        "target": row.target,
        "params": row.params,
        "result": row.result,
        "request_id": row.request_id,
    }


async def entries_after(seq: int, *, limit: int = 500) -> list[dict[str, Any]]:
    """Entries with sequence number greater than ``seq``, oldest first (a durable event cursor)."""
    async with get_database().session() as session:
        rows = await session.execute(
            select(AuditEntry).where(AuditEntry.seq > seq).order_by(AuditEntry.seq).limit(limit)
        )
        return [entry_dict(r) for r in rows.scalars()]
