"""The probe scheduler on an injected clock: spreading, intervals, no bursts, jitter recorded."""

from __future__ import annotations

import datetime as dt
import types

import httpx
import pytest
from sqlalchemy import select

from api.routers import sentry as sentry_router
from models.db import Database
from models.sentry import Monitor, ProbeResult
from models.settings import get_settings
from tests.sentry.conftest import FakeClock, SiteFactory, Upstream
from tools.sentry import ProbeScheduler


async def results_for(database: Database, site_ids: list[int]) -> list[ProbeResult]:
    async with database.session() as session:
        rows = await session.execute(
            select(ProbeResult).where(ProbeResult.site_id.in_(site_ids)).order_by(ProbeResult.id)
        )
        return list(rows.scalars())


async def test_every_site_at_its_interval_without_bursts(
    database: Database,
    make_site: SiteFactory,
    upstream: Upstream,
    clock: FakeClock,
    probe_client: httpx.AsyncClient,
) -> None:
    sites = [await make_site(upstream.url) for _ in range(3)]
    paused = await make_site(upstream.url, enabled=False)
    fast = await make_site(upstream.url, interval_s=20)
    scheduler = ProbeScheduler(clock=clock, client=probe_client, concurrency=2, seed=7)
    t0 = clock.now()
    assert await scheduler.tick() == 0  # first probes are spread over one interval
    async with database.session() as session:
        monitors = {m.site_id: m for m in (await session.execute(select(Monitor))).scalars()}
    assert all(t0 <= monitors[s].next_due_at < t0 + dt.timedelta(seconds=60) for s in sites)

    clock.advance(60)
    assert await scheduler.tick() == 4  # the three, plus the 20 s site; not the paused one
    await scheduler.drain()
    assert await scheduler.tick() == 0  # nothing is due twice
    first = await results_for(database, [*sites, paused])
    assert sorted(r.site_id for r in first) == sites
    for row in first:
        assert row.ok and row.scheduled_for is not None and row.ts >= row.scheduled_for
        assert row.ts - row.scheduled_for < dt.timedelta(seconds=60)

    async with database.session() as session:
        after = {m.site_id: m for m in (await session.execute(select(Monitor))).scalars()}
    for site in sites:  # the next due time follows the previous due time: no drift
        assert after[site].next_due_at == monitors[site].next_due_at + dt.timedelta(seconds=60)
    step = (after[fast].next_due_at - monitors[fast].next_due_at).total_seconds()
    assert step % 20 == 0 and after[fast].next_due_at > clock.now()

    clock.advance(600)  # the scheduler was stalled for ten intervals: one probe each, no burst
    assert await scheduler.tick() == 4
    await scheduler.drain()
    assert await scheduler.tick() == 0
    async with database.session() as session:
        for monitor in (await session.execute(select(Monitor))).scalars():
            assert monitor.next_due_at > clock.now()
    assert len(await results_for(database, [*sites, paused])) == 6
    assert len(await results_for(database, [fast])) == 2


async def test_lifespan_runs_the_scheduler(
    monkeypatch: pytest.MonkeyPatch, database: Database
) -> None:
    monkeypatch.setattr(get_settings(), "sentry_scheduler", True)
    app = types.SimpleNamespace(state=types.SimpleNamespace())
    async with sentry_router.lifespan(app):  # type: ignore[arg-type]
        scheduler = app.state.sentry_scheduler
        assert isinstance(scheduler, ProbeScheduler) and scheduler.running
    assert not scheduler.running

    monkeypatch.setattr(get_settings(), "sentry_scheduler", False)
    app = types.SimpleNamespace(state=types.SimpleNamespace())
    async with sentry_router.lifespan(app):  # type: ignore[arg-type]
        assert not hasattr(app.state, "sentry_scheduler")
