"""Running probes: one site now (``probe_site``), every site at its interval (``ProbeScheduler``).

``probe_site`` is the unit of work: read the site, probe it with no database session open, then
store the result and advance the incident state machine in one transaction, and finally record
``incident_opened`` / ``incident_resolved`` in the ledger. The scheduler is self-contained (an
asyncio loop started by the API's lifespan) so it can later move onto the job system's cron
schedules by calling ``claim_due`` and ``probe_site`` from there.

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
from sqlalchemy import delete, select

from models import ledger
from models.db import session_scope, utcnow
from models.sentry import Monitor, ProbeResult
from models.sites import Site
from tools.sentry.incidents import Transition, apply_outcome
from tools.sentry.probes import ProbeConfig, ProbeOutcome, probe

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
    """The HTTP client probes share (no redirects followed: a 3xx is an answer)."""
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(verify=verify, limits=limits, follow_redirects=False, trust_env=False)


async def probe_site(
    site_id: int,
    *,
    now: dt.datetime,
    client: httpx.AsyncClient,
    scheduled_for: dt.datetime | None = None,
    preloaded: tuple[ProbeConfig, str | None] | None = None,
) -> dict[str, Any] | None:
    """Probe one site, store the result, advance its incident; None if the site is gone.

    ``preloaded`` (config, previous content hash) saves a read when the caller has them.
    """
    if preloaded is None:
        async with session_scope() as session:
            site = await session.get(Site, site_id)
            if site is None:
                return None
            monitor = await session.get(Monitor, site_id)
            preloaded = (
                ProbeConfig.of(site.url, site.meta),
                monitor.content_hash if monitor else None,
            )
    config, previous_hash = preloaded
    outcome = await probe(config, client=client, previous_hash=previous_hash, now=now)
    transition = await _store(site_id, outcome, now=now, scheduled_for=scheduled_for)
    if transition is not None:
        incident = transition.incident
        await ledger.record(
            transition.action,
            actor="sentry",
            target=f"site:{site_id}",
            params={"site_id": site_id, "incident_id": incident.id},
            result={"severity": incident.severity, "failures": list(incident.failures)},
        )
    return {
        "site_id": site_id,
        "ok": outcome.ok,
        "failures": outcome.failures,
        "warnings": outcome.warnings,
        "severity": outcome.severity,
        "status_code": outcome.status_code,
        "latency_ms": outcome.latency_ms,
        "checks": outcome.checks_dict(),
        "incident": transition.action if transition else None,
    }


async def _store(
    site_id: int, outcome: ProbeOutcome, *, now: dt.datetime, scheduled_for: dt.datetime | None
) -> Transition | None:
    async with session_scope() as session:
        if await session.get(Site, site_id) is None:
            return None
        monitor = await session.get(Monitor, site_id, with_for_update=True)
        if monitor is None:
            monitor = Monitor(
                site_id=site_id,
                next_due_at=now,
                consecutive_failures=0,
                consecutive_successes=0,
                last_failures=[],
            )
            session.add(monitor)
        session.add(
            ProbeResult(
                site_id=site_id,
                ts=now,
                scheduled_for=scheduled_for,
                ok=outcome.ok,
                severity=outcome.severity,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                failures=outcome.failures,
                warnings=outcome.warnings,
                checks=outcome.checks_dict(),
            )
        )
        if outcome.content_hash is not None:
            monitor.content_hash = outcome.content_hash
        monitor.last_probe_at = now
        return await apply_outcome(session, monitor, outcome)


@dataclass
class DueProbe:
    site_id: int
    scheduled_for: dt.datetime
    config: ProbeConfig
    previous_hash: str | None


async def claim_due(now: dt.datetime, *, exclude: set[int], rng: random.Random) -> list[DueProbe]:
    """Start monitoring new sites (first probe spread over one interval); claim the due ones."""
    claimed: list[DueProbe] = []
    async with session_scope() as session:
        new_sites = await session.execute(
            select(Site.id, Site.url, Site.meta)
            .outerjoin(Monitor, Monitor.site_id == Site.id)
            .where(Monitor.site_id.is_(None))
        )
        for site_id, url, meta in new_sites.all():
            interval = ProbeConfig.of(url, meta).interval_s
            offset = dt.timedelta(seconds=rng.uniform(0, interval))
            session.add(
                Monitor(
                    site_id=site_id,
                    next_due_at=now + offset,
                    consecutive_failures=0,
                    consecutive_successes=0,
                    last_failures=[],
                )
            )
        await session.flush()
        due = await session.execute(
            select(Monitor, Site.url, Site.meta)
            .join(Site, Site.id == Monitor.site_id)
            .where(Monitor.next_due_at <= now)
            .order_by(Monitor.next_due_at)
            .limit(1000)
        )
        for monitor, url, meta in due.all():
            if monitor.site_id in exclude:
                continue
            config = ProbeConfig.of(url, meta)
            step = dt.timedelta(seconds=max(1.0, config.interval_s))
            scheduled = monitor.next_due_at
            following = scheduled + step
            while following <= now:  # fell more than an interval behind: skip, do not burst
                following += step
            monitor.next_due_at = following
            if config.enabled:
                claimed.append(DueProbe(monitor.site_id, scheduled, config, monitor.content_hash))
    return claimed


async def prune_results(before: dt.datetime) -> int:
    async with session_scope() as session:
        result = await session.execute(delete(ProbeResult).where(ProbeResult.ts < before))
        return int(getattr(result, "rowcount", 0) or 0)


class ProbeScheduler:
    """Probes every monitored site at its interval with at most ``concurrency`` at once."""

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
        self._loop_task: asyncio.Task[None] | None = None
        self._next_prune: dt.datetime | None = None

    async def tick(self) -> int:
        """One pass: claim what is due now and start those probes; returns how many started."""
        now = self.clock.now()
        if self._next_prune is None or now >= self._next_prune:
            self._next_prune = now + dt.timedelta(hours=1)
            await prune_results(now - RETENTION)
        due = await claim_due(now, exclude=set(self._inflight), rng=self._rng)
        for item in due:
            task = asyncio.create_task(self._run(item))
            self._inflight[item.site_id] = task
        return len(due)

    async def _run(self, item: DueProbe) -> None:
        try:
            async with self._semaphore:
                await probe_site(
                    item.site_id,
                    now=self.clock.now(),
                    client=self._client,
                    scheduled_for=item.scheduled_for,
                    preloaded=(item.config, item.previous_hash),
                )
        except Exception:
            log.exception("probe of site %s failed", item.site_id)
        finally:
            self._inflight.pop(item.site_id, None)

    async def drain(self) -> None:
        """Wait for the probes in flight (tests and shutdown)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sentry scheduler tick failed")
            await self.clock.sleep(self.tick_s)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*list(self._inflight.values()), return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()
