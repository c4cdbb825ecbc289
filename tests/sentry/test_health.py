"""Health score and threat level: the formula, its response to failures and block rate."""

from __future__ import annotations

import datetime as dt
import sys
import types

import httpx
import pytest

from models.db import Database
from models.sentry import ProbeResult
from tests.conftest import auth
from tests.sentry.conftest import FakeClock, SiteFactory, Upstream
from tools import sentry
from tools.sentry.health import Signals, health_score, threat_level
from tools.sentry.scheduler import probe_site


def rate(signals: Signals) -> tuple[int, str]:
    score, _ = health_score(signals)
    return score, threat_level(signals, score)


def test_a_quiet_healthy_site_scores_100_and_low() -> None:
    assert rate(Signals()) == (100, "low")


def test_block_rate_lowers_the_score_and_raises_the_threat() -> None:
    levels = [rate(Signals(block_rate=b)) for b in (0.0, 0.05, 0.1, 0.3, 0.6)]
    scores = [s for s, _ in levels]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert [t for _, t in levels] == ["low", "low", "medium", "medium", "high"]


def test_failures_latency_incidents_and_eshield_hits_each_count() -> None:
    assert rate(Signals(availability=0.99))[0] == 95
    assert rate(Signals(availability=0.5)) == (50, "high")
    assert rate(Signals(latency_ratio=4.0))[0] == 85
    assert rate(Signals(open_incidents={"critical": 1}))[1] == "critical"
    assert rate(Signals(open_incidents={"low": 1})) == (97, "medium")
    assert rate(Signals(eshield_hits=999)) == (90, "medium")
    worst = Signals(
        availability=0.0,
        latency_ratio=10,
        open_incidents={"critical": 3},
        block_rate=1.0,
        eshield_hits=10**6,
    )
    assert rate(worst) == (0, "critical")


async def test_health_moves_with_real_probe_failures(
    database: Database,
    make_site: SiteFactory,
    upstream: Upstream,
    clock: FakeClock,
    probe_client: httpx.AsyncClient,
) -> None:
    site_id = await make_site(upstream.url)
    for _ in range(5):
        await probe_site(site_id, now=clock.advance(60), client=probe_client)
    async with database.session() as session:
        healthy = await sentry.get_site_health(session, site_id=site_id, now=clock.now())
    assert (healthy["health_score"], healthy["threat_level"]) == (100, "low")
    assert healthy["probes_last_24h"] == 5

    upstream.script.extend([502, 502, 502])
    for _ in range(3):
        await probe_site(site_id, now=clock.advance(60), client=probe_client)
    async with database.session() as session:
        failing = await sentry.get_site_health(session, site_id=site_id, now=clock.now())
    assert failing["signals"]["availability"] == 0.625
    assert failing["signals"]["open_incidents"] == {"high": 1}
    assert failing["health_score"] < healthy["health_score"]
    assert failing["threat_level"] in {"high", "critical"}


async def test_block_rate_from_the_traffic_module_reaches_the_score(
    database: Database, make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until tools.vaultshield lands, a stand-in module exercises the import seam."""
    site_id = await make_site("http://127.0.0.1:9/")
    calls: list[int] = []
    stand_in = types.ModuleType("tools.vaultshield")

    async def site_traffic_stats(session, *, site_id, since):
        calls.append(site_id)
        return {"requests": 1000, "blocked": 600, "eshield_hits": 12}

    stand_in.site_traffic_stats = site_traffic_stats  # type: ignore[attr-defined]
    async with database.session() as session:
        before = await sentry.get_site_health(session, site_id=site_id)
        monkeypatch.setitem(sys.modules, "tools.vaultshield", stand_in)
        under_attack = await sentry.get_site_health(session, site_id=site_id)
    assert before["signals"]["block_rate"] == 0 and before["threat_level"] == "low"
    assert under_attack["signals"]["block_rate"] == 0.6
    assert under_attack["signals"]["eshield_hits"] == 12
    assert under_attack["health_score"] < before["health_score"]
    assert under_attack["threat_level"] == "high" and calls == [site_id]


async def test_prediction_from_stored_history(
    database: Database, make_site: SiteFactory, clock: FakeClock
) -> None:
    site_id = await make_site("http://127.0.0.1:9/")
    start = clock.now() - dt.timedelta(days=4)
    async with database.session() as session:
        for minute in range(0, 4 * 24 * 60, 20):
            ts = start + dt.timedelta(minutes=minute)
            ok = minute % 600 != 0
            session.add(
                ProbeResult(
                    site_id=site_id,
                    ts=ts,
                    ok=ok,
                    latency_ms=80 + (minute % 1440) / 60,
                    failures=[] if ok else ["http"],
                    warnings=[],
                    checks={},
                )
            )
    async with database.session() as session:
        health = await sentry.get_site_health(session, site_id=site_id, now=clock.now())
    forecast = health["prediction"]
    assert forecast["method"] == "exponential_smoothing"
    assert forecast["hours_of_history"] == 96  # complete hours only
    avail = forecast["availability"]
    assert 0 <= avail["lower"] <= avail["expected"] <= avail["upper"] <= 1
    assert len(avail["hourly"]) == 24
    assert forecast["latency_ms"]["method"] in {"holt", "holt_winters"}
    assert forecast["latency_ms"]["backtest"]["origins"] == 2
    assert forecast["latency_ms"]["backtest"]["mae_naive"] is not None


async def test_health_route(client: httpx.AsyncClient, make_key, make_site: SiteFactory) -> None:
    site_id = await make_site("http://127.0.0.1:9/")
    key = await make_key("read")
    response = await client.get(f"/api/sentry/health/{site_id}", headers=auth(key))
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["site_id"] == site_id
    assert {"health_score", "threat_level", "prediction", "signals", "penalties"} <= body.keys()
    assert (
        body["signals"]["block_rate"] == 0 and body["prediction"]["method"] == "insufficient_data"
    )
    missing = await client.get("/api/sentry/health/999999", headers=auth(key))
    assert missing.status_code == 404 and missing.json()["code"] == "SITE_NOT_FOUND"
    assert (await client.get("/api/v1/sentry/health/abc", headers=auth(key))).status_code == 400
