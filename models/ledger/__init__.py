"""The audit ledger: a tamper-evident Merkle transparency log (RFC 9162, C2SP tlog-checkpoint).

``record`` is the one function every part of the system calls. Each entry is RFC 8785 canonical
JSON (``canonical``), hashed into an RFC 9162 tree whose complete subtrees are stored as they
are completed (``merkle``, ``store``); signed checkpoints commit to the tree (``checkpoints``);
``verify`` checks all of it offline. Concurrent ``record`` calls in one process share one
transaction (group commit); processes are serialised by the ledger head row.
"""

from __future__ import annotations

import asyncio
import functools
import re
import weakref
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from models.db import get_database, utcnow
from models.ledger import store
from models.ledger.canonical import normalise
from models.ledger.store import AuditEntry, Draft

__all__ = [
    "REDACTED",
    "AuditEntry",
    "count_entries",
    "entries_after",
    "entry_dict",
    "record",
    "redact",
]

REDACTED = "[REDACTED]"
_SECRET_WORDS = (
    "password",
    "secret",
    "token",
    "private_key",
    "api_key",
    "authorization",
    "passphrase",
    "credential",
)
MAX_BATCH = 5000


_SECRET_KEY = re.compile("|".join(_SECRET_WORDS), re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _is_secret(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-looking field replaced by ``[REDACTED]``."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED if _is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


class _GroupCommit:
    """Appends from one event loop: whoever holds the lock writes everything queued so far."""

    def __init__(self) -> None:
        self.pending: list[tuple[Draft, asyncio.Future[int]]] = []
        self.lock = asyncio.Lock()

    async def submit(self, draft: Draft) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append((draft, future))
        while not future.done():
            async with self.lock:
                if not future.done():
                    batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                    await self._write(batch)
        return future.result()

    @staticmethod
    async def _write(batch: list[tuple[Draft, asyncio.Future[int]]]) -> None:
        try:
            async with get_database().session() as session:
                seqs = await store.append(session, [draft for draft, _ in batch])
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else RuntimeError("ledger append aborted")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), seq in zip(batch, seqs, strict=True):
            future.set_result(seq)


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupCommit] = (
    weakref.WeakKeyDictionary()
)


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
    draft = Draft(
        ts=utcnow(),
        action=str(action),
        actor=str(actor),
        server_id=None if server_id is None else int(server_id),
        target=None if target is None else str(target),
        params=normalise(redact(dict(params or {}))),
        result=normalise(redact(dict(result or {}))),
        request_id=None if request_id is None else str(request_id),
    )
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = _GroupCommit()
    return await writer.submit(draft)


async def count_entries() -> int:
    async with get_database().session() as session:
        return int(
            (await session.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
        )


def entry_dict(row: AuditEntry) -> dict[str, Any]:
    """An entry as plain data, exactly the object its leaf hash covers (what webhooks,
    exports and the API see)."""
    return store.entry_of(row)


async def entries_after(seq: int, *, limit: int = 500) -> list[dict[str, Any]]:
    """Entries with sequence number greater than ``seq``, oldest first (a durable event cursor)."""
    async with get_database().session() as session:
        rows = await session.execute(
            select(AuditEntry).where(AuditEntry.seq > seq).order_by(AuditEntry.seq).limit(limit)
        )
        return [entry_dict(r) for r in rows.scalars()]
