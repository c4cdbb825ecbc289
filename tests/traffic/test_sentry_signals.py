"""Sentry V's health score reads VaultShield's per-site counters through site_traffic_stats."""

from __future__ import annotations

import datetime as dt

from models.db import utcnow
from models.sites import Site
from models.traffic import TrafficMinute
from tools.sentry.traffic import traffic_signals


async def test_sentry_reads_block_and_quarantine_counts(database) -> None:
    now = utcnow().replace(second=0, microsecond=0)
    async with database.session() as session:
        site = Site(name=f"signals-{now.timestamp()}", url="http://127.0.0.1:9/")
        session.add(site)
        await session.flush()
        session.add_all(
            [
                TrafficMinute(
                    site_id=site.id,
                    proxy_id="a",
                    minute=now,
                    requests=10,
                    blocked=4,
                    rule_hits={"q7": 3, "12": 1},
                ),
                TrafficMinute(
                    site_id=site.id,
                    proxy_id="b",
                    minute=now,
                    requests=5,
                    blocked=1,
                    rule_hits={"q7": 1},
                ),
                TrafficMinute(
                    site_id=site.id,
                    proxy_id="a",
                    minute=now - dt.timedelta(hours=3),
                    requests=100,
                    blocked=100,
                    rule_hits={"q1": 100},
                ),
            ]
        )
    async with database.session() as session:
        signals = await traffic_signals(session, site_id=site.id, since=now - dt.timedelta(hours=1))
    assert signals == {"requests": 15, "blocked": 5, "eshield_hits": 4}
