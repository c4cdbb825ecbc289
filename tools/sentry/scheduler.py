"""Running probes: one site now (``probe_site``), every site at its interval (``ProbeScheduler``).

A probe runs with no database session open; its outcome is then stored (``store.py``). The
scheduler is self-contained (an asyncio loop started by the API's lifespan) so it can later
move onto the job system's cron schedules by calling ``claim_due`` and ``probe_site``.

Each site's next due time advances from its previous *due* time, not from when a probe ended,
so probes do not drift; ``ProbeResult.scheduled_for`` versus ``ts`` is the measured jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from sqlalchemy import select

from models.db import session_scope, utcnow
from models.sentry import Monitor
from models.sites import Site
from tools.sentry.probes import ProbeConfig, probe
from tools.sentry.store import Finished, new_monitor, prune_results, store_outcomes, writing
from tools.ssrf import guarded_transport

log = logging.getLogger("execflow.sentry")
RETENTION = dt.timedelta(days=14)


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return utcnow()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def make_client(
    *, verify: ssl.SSLContext | bool = True, concurrency: int = 20
) -> httpx.AsyncClient:
    """The HTTP client probes share (no redirects followed: a 3xx is an answer).

    Every connection is resolved, checked and pinned by the SSRF guard's monitor policy: a site
    may be on a private network, never on a metadata or link-local address (not even when its
    DNS answer changes between the probe's DNS check and the connection).
    """
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    transport = guarded_transport(verify=verify, limits=limits)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)


async def probe_site(
    site_id: int, *, now: dt.datetime, client: httpx.AsyncClient
) -> dict[str, Any] | None:
    """Probe one site now, store the result, advance its incident; None if the site is gone."""
    async with session_scope() as session:
        site = await session.get(Site, site_id)
        if site is None:
            return None
        monitor = await session.get(Monitor, site_id)
        config = ProbeConfig.of(site.url, site.meta, site.id)
        previous_hash = monitor.content_hash if monitor else None
    outcome = await probe(config, client=client, previous_hash=previous_hash, now=now)
    item = Finished(site_id, outcome)
    await store_outcomes([item])
    if not item.stored:
        return None
    return {
        "site_id": site_id,
        "ok": outcome.ok,
        "failures": outcome.failures,
        "warnings": outcome.warnings,
        "severity": outcome.severity,
        "status_code": outcome.status_code,
        "latency_ms": outcome.latency_ms,
        "checks": outcome.checks_dict(),
        "incident": item.transition.action if item.transition else None,
    }


@dataclass
class DueProbe:
    site_id: int
    scheduled_for: dt.datetime
    config: ProbeConfig
    previous_hash: str | None


async def claim_due(now: dt.datetime, *, exclude: set[int], rng: random.Random) -> list[DueProbe]:
    """Start monitoring new sites (first probe spread over one interval); claim the due ones."""
    claimed: list[DueProbe] = []
    async with writing() as session:
        new_sites = await session.execute(
            select(Site.id, Site.url, Site.meta)
            .outerjoin(Monitor, Monitor.site_id == Site.id)
            .where(Monitor.site_id.is_(None))
        )
        for site_id, url, meta in new_sites.all():
            offset = rng.uniform(0, ProbeConfig.of(url, meta).interval_s)
            session.add(new_monitor(site_id, now + dt.timedelta(seconds=offset)))
        await session.flush()
        due = await session.execute(
            select(Monitor, Site.url, Site.meta)
            .join(Site, Site.id == Monitor.site_id)
            .where(Monitor.next_due_at <= now)
            .order_by(Monitor.next_due_at)
            .limit(1000)
            # Several API processes may schedule: each row is claimed once (PostgreSQL).
            .with_for_update(skip_locked=True, of=Monitor)
        )
        for monitor, url, meta in due.all():
            if monitor.site_id in exclude:
                continue
            config = ProbeConfig.of(url, meta, monitor.site_id)
            step = dt.timedelta(seconds=max(1.0, config.interval_s))
            scheduled = monitor.next_due_at
            following = scheduled + step
            while following <= now:  # fell more than an interval behind: skip, do not burst
                following += step
            monitor.next_due_at = following
            if config.enabled:
                claimed.append(DueProbe(monitor.site_id, scheduled, config, monitor.content_hash))
    return claimed


class ProbeScheduler:
    """Probes every monitored site at its interval, at most ``concurrency`` at once.

    Outcomes are stored by one writer task in batches (one transaction per flush).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        concurrency: int = 20,
        tick_s: float = 0.5,
        client: httpx.AsyncClient | None = None,
        seed: int | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.tick_s = tick_s
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client = client or make_client(concurrency=concurrency)
        self._owns_client = client is None
        self._rng = random.Random(seed)  # spreads load; not security
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._pending: list[tuple[Finished, asyncio.Future[None]]] = []
        self._wake_writer = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._next_prune: dt.datetime | None = None

    async def tick(self) -> int:
        """One pass: claim what is due now and start those probes; returns how many started."""
        now = self.clock.now()
        if self._next_prune is None or now >= self._next_prune:
            self._next_prune = now + dt.timedelta(hours=1)
            await prune_results(now - RETENTION)
        due = await claim_due(now, exclude=set(self._inflight), rng=self._rng)
        for item in due:
            self._inflight[item.site_id] = asyncio.create_task(self._run(item))
        return len(due)

    async def _run(self, item: DueProbe) -> None:
        try:
            async with self._semaphore:
                outcome = await probe(
                    item.config,
                    client=self._client,
                    previous_hash=item.previous_hash,
                    now=self.clock.now(),
                )
            stored = asyncio.get_running_loop().create_future()
            self._pending.append((Finished(item.site_id, outcome, item.scheduled_for), stored))
            self._wake_writer.set()
            if not self._tasks:  # no writer running (tests driving tick by hand): store now
                await self.flush()
            await stored
        except Exception:
            log.exception("probe of site %s failed", item.site_id)
        finally:
            self._inflight.pop(item.site_id, None)

    async def flush(self) -> None:
        """Store every outcome waiting, in one transaction."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await store_outcomes([finished for finished, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    async def drain(self) -> None:
        """Wait for the probes in flight and their storage (tests and shutdown)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    async def _schedule_loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("sentry scheduler tick failed")
            await self.clock.sleep(self.tick_s)

    async def _writer_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("storing probe results failed")
            await self.clock.sleep(self.tick_s / 2)  # let a batch gather

    def start(self, *, schedule: bool = True) -> None:
        """Run the batch writer and, unless ``schedule`` is False, the ticking loop."""
        self._tasks = [asyncio.create_task(self._writer_loop())]
        if schedule:
            self._tasks.append(asyncio.create_task(self._schedule_loop()))

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._inflight.values(), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush()
        self._tasks.clear()
        if self._owns_client:
            await self._client.aclose()
