"""The dispatcher: fans ledger entries out into deliveries and works through due deliveries.

Fan-out reads ``models.ledger.entries_after(cursor)`` and, in ONE transaction, inserts a
delivery per subscribed endpoint and advances the durable cursor (a compare-and-set, so two
dispatchers never both advance it). Deliveries are claimed with a lease; an attempt that never
reports back (the process died) is picked up again when its lease expires. Several dispatchers
(API replicas, ``execflow webhooks worker``) can run against one database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from models import ledger
from models.db import get_database, utcnow
from models.settings import get_settings
from models.webhooks import WebhookCursor, WebhookDelivery, WebhookEndpoint
from tools.webhooks.delivery import attempt_delivery
from tools.webhooks.events import subscribed
from tools.webhooks.payload import encode_body, ledger_event

log = logging.getLogger("execflow.webhooks")
CURSOR = "ledger"
FAN_OUT_BATCH = 500


class _CursorMoved(Exception):
    """Another dispatcher advanced the cursor first; this batch is theirs."""


def lease_seconds() -> float:
    return get_settings().webhook_timeout_seconds * 1.5 + 5.0


async def _initial_cursor() -> int:
    async with get_database().session() as session:
        start = (
            await session.execute(select(WebhookEndpoint.start_seq).order_by("start_seq"))
        ).scalar()
        if start is None:
            head = await session.execute(
                select(ledger.AuditEntry.seq).order_by(ledger.AuditEntry.seq.desc()).limit(1)
            )
            start = head.scalar()
        seq = -1 if start is None else int(start)
        session.add(WebhookCursor(name=CURSOR, seq=seq))
    return seq


async def read_cursor() -> int:
    async with get_database().session() as session:
        row = await session.get(WebhookCursor, CURSOR)
        if row is not None:
            return row.seq
    try:
        return await _initial_cursor()
    except IntegrityError:  # another dispatcher created it
        return await read_cursor()


async def fan_out_once() -> int:
    """Turn the next batch of ledger entries into deliveries; return how many were created."""
    cursor = await read_cursor()
    entries = await ledger.entries_after(cursor, limit=FAN_OUT_BATCH)
    if not entries:
        return 0
    created = 0
    try:
        async with get_database().session() as session:
            endpoints = list(
                (
                    await session.execute(
                        select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True))
                    )
                ).scalars()
            )
            for entry in entries:
                event = None
                for endpoint in endpoints:
                    if entry["seq"] <= endpoint.start_seq or not subscribed(
                        list(endpoint.events), entry["action"]
                    ):
                        continue
                    event = event or ledger_event(entry)
                    session.add(
                        WebhookDelivery(
                            endpoint_id=endpoint.id,
                            event_id=event["id"],
                            event_type=event["type"],
                            event_seq=entry["seq"],
                            body=encode_body(event).decode("utf-8", errors="surrogatepass"),
                        )
                    )
                    created += 1
            moved = await session.execute(
                update(WebhookCursor)
                .where(WebhookCursor.name == CURSOR, WebhookCursor.seq == cursor)
                .values(seq=entries[-1]["seq"], updated_at=utcnow())
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                raise _CursorMoved
    except (_CursorMoved, IntegrityError):
        return 0
    return created


async def claim_due(owner: str, limit: int) -> list[int]:
    """Lease up to ``limit`` due deliveries of enabled endpoints to ``owner`` (one transaction)."""
    now = utcnow()
    token = f"{owner}:{secrets.token_hex(4)}"
    free = or_(WebhookDelivery.leased_until.is_(None), WebhookDelivery.leased_until < now)
    async with get_database().session() as session:
        candidates = list(
            (
                await session.execute(
                    select(WebhookDelivery.id)
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                    .where(
                        WebhookDelivery.status == "pending",
                        WebhookDelivery.next_attempt_at <= now,
                        WebhookEndpoint.enabled.is_(True),
                        free,
                    )
                    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                    .limit(limit)
                )
            ).scalars()
        )
        if not candidates:
            return []
        # the conditional update is the claim: a row another dispatcher leased meanwhile is
        # no longer free and is skipped; the token tells which rows this call won
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id.in_(candidates),
                WebhookDelivery.status == "pending",
                free,
            )
            .values(leased_until=now + dt.timedelta(seconds=lease_seconds()), lease_owner=token)
        )
        won = await session.execute(
            select(WebhookDelivery.id)
            .where(WebhookDelivery.id.in_(candidates), WebhookDelivery.lease_owner == token)
            .order_by(WebhookDelivery.id)
        )
        return list(won.scalars())


class Dispatcher:
    """The loop: fan out, claim, attempt (bounded concurrency), sleep ``poll_seconds``."""

    def __init__(self, *, poll_seconds: float | None = None, concurrency: int | None = None):
        settings = get_settings()
        self.poll_seconds = poll_seconds or settings.webhook_poll_seconds
        self.concurrency = concurrency or settings.webhook_concurrency
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[object]] = set()
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="webhook-dispatcher")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self._in_flight] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def run_once(self) -> int:
        """One pass: fan out everything pending, then start due attempts. Returns attempts."""
        while await fan_out_once():
            pass
        free = self.concurrency - len(self._in_flight)
        if free <= 0:
            return 0
        claimed = await claim_due(self.owner, free)
        for delivery_id in claimed:
            task = asyncio.create_task(attempt_delivery(delivery_id))
            self._in_flight.add(task)
            task.add_done_callback(self._finished)
        return len(claimed)

    def _finished(self, task: asyncio.Task[object]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook attempt crashed", exc_info=task.exception())
        self._wake.set()

    async def drain(self) -> None:
        """Wait for in-flight attempts (tests, benchmarks)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook dispatcher pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
