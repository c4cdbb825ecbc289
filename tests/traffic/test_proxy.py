"""A real ``execflow shield`` process in front of a real upstream, driven through the API.

Rule changes reach the proxy by the database version poll (no Redis in this module); each
test waits, in a bounded loop, for its change to take effect.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from models.db import Database
from models.ledger import AuditEntry
from models.settings import Settings
from tests.conftest import auth
from tests.traffic.conftest import (
    eventually,
    pass_challenge,
    shield_process,
    status_of,
    visitor,
)

ALLOWED_NET = "127.0.11.0/24"


@pytest.fixture(scope="module")
async def admin(make_key: Any) -> dict[str, str]:
    return auth(await make_key("admin"))


@pytest.fixture(scope="module")
async def proxy(
    client: httpx.AsyncClient, admin: dict[str, str], settings: Settings, upstream: str
) -> AsyncIterator[dict[str, Any]]:
    geo = settings.data_dir / "countries.csv"
    geo.write_text("start,end,country\n127.0.13.0,127.0.13.255,FR\n127.0.14.0,127.0.14.255,DE\n")
    response = await client.post(
        "/api/sites",
        json={
            "name": "shop",
            "url": "https://shop.example",
            "upstream_url": upstream,
            "allowlist": [ALLOWED_NET],
        },
        headers=admin,
    )
    assert response.status_code == 201, response.text
    site = response.json()["site"]
    env = {"EXECFLOW_VAULTSHIELD_GEOIP_PATH": str(geo)}
    with shield_process(settings, site_id=site["id"], upstream=upstream, env=env) as base:
        yield {"base": base, "site": site}


async def add_rule(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> int:
    response = await client.post("/api/vaultshield/rules", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return int(response.json()["rule"]["id"])


async def wait_status(base: str, ip: str, expected: int, **headers: str) -> float:
    async def check() -> bool:
        return await status_of(base, ip, **headers) == expected

    return await eventually(check)


async def test_forwards_and_streams_bodies(proxy: dict[str, Any]) -> None:
    body = os.urandom(1_500_000)
    async with visitor(proxy["base"], "127.0.2.1") as client:
        got = await client.get("/hello?x=1")
        assert got.status_code == 200
        assert got.json()["path"] == "/hello?x=1"
        assert got.json()["forwarded_for"] == "127.0.2.1"
        posted = await client.post("/upload", content=body)
        assert posted.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert posted.json()["body_length"] == len(body)


async def test_ipv4_cidr_block(
    client: httpx.AsyncClient, admin: dict[str, str], proxy: Any
) -> None:
    base = proxy["base"]
    await add_rule(
        client, admin, type="ip_block", value="127.0.5.0/24", site_id=proxy["site"]["id"]
    )
    await wait_status(base, "127.0.5.9", 403)
    assert await status_of(base, "127.0.6.1") == 200
    async with visitor(base, "127.0.5.10") as c:
        page = await c.get("/")
        assert page.status_code == 403 and "blocked by VaultShield" in page.text


async def test_rule_precedence(
    client: httpx.AsyncClient, admin: dict[str, str], proxy: Any
) -> None:
    """Priority 1 first: the first block/challenge decides; log records and continues."""
    base = proxy["base"]
    log_rule = await add_rule(
        client, admin, type="ip_block", value="127.0.7.0/24", action="log", priority=1
    )
    await add_rule(client, admin, type="ip_block", value="127.0.7.0/24", priority=50)
    await add_rule(
        client, admin, type="ip_block", value="127.0.7.7", action="challenge", priority=10
    )

    async def challenged() -> bool:  # the last rule added is live, so the earlier ones are too
        async with visitor(base, "127.0.7.7") as probe:
            return (await probe.get("/")).headers.get("x-vaultshield") == "challenge"

    await eventually(challenged)
    await wait_status(base, "127.0.7.8", 403)
    async with visitor(base, "127.0.7.7") as c:
        first = await c.get("/")
        assert first.headers.get("x-vaultshield") == "challenge"
        passed = await pass_challenge(c)
        assert passed.status_code == 303
        # past the challenge, the next rule in order (block, priority 50) decides
        blocked = await c.get("/")
        assert blocked.status_code == 403 and "x-vaultshield" not in blocked.headers
    listed = await client.get("/api/vaultshield/rules", headers=admin)
    priorities = [r["priority"] for r in listed.json()["rules"]]
    assert priorities == sorted(priorities)
    assert log_rule in [r["id"] for r in listed.json()["rules"]]


async def test_user_agent_patterns(
    client: httpx.AsyncClient, admin: dict[str, str], proxy: Any
) -> None:
    base = proxy["base"]
    await add_rule(client, admin, type="user_agent_block", value="EvilScanner")
    await add_rule(client, admin, type="user_agent_block", value=r"/^sqlmap\/[0-9]+/")
    # Changes reach the proxy in order: once the later rule is live, the earlier one is too.
    await wait_status(base, "127.0.8.1", 403, **{"user-agent": "sqlmap/1.7"})
    assert await status_of(base, "127.0.8.1", **{"user-agent": "Mozilla evilscanner/2"}) == 403
    assert await status_of(base, "127.0.8.1", **{"user-agent": "not sqlmap/1.7"}) == 200
    assert await status_of(base, "127.0.8.1", **{"user-agent": "Mozilla/5.0"}) == 200


async def test_rate_limit_returns_429(
    client: httpx.AsyncClient, admin: dict[str, str], proxy: Any
) -> None:
    base = proxy["base"]
    await add_rule(client, admin, type="rate_limit", value="127.0.9.5 3/min")
    # wait until the rule is live (the probe requests count against the bucket too)
    async with visitor(base, "127.0.9.5") as c:

        async def limited() -> bool:
            return (await c.get("/")).status_code == 429

        await eventually(limited)
        response = await c.get("/")
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
    assert await status_of(base, "127.0.9.6") == 200


async def test_challenge_round_trip(
    client: httpx.AsyncClient, admin: dict[str, str], proxy: Any
) -> None:
    base = proxy["base"]
    await add_rule(client, admin, type="ip_block", value="127.0.10.0/24", action="challenge")
    await wait_status(base, "127.0.10.1", 403)
    async with visitor(base, "127.0.10.1") as c:
        page = await c.get("/private")
        token = page.text.split('name="token" value="')[1].split('"')[0]
        from tools.vaultshield.challenge import VERIFY_PATH, solve

        answer = str(solve(token, int(token.split(".")[1])))
        ok = await c.post(VERIFY_PATH, data={"token": token, "answer": answer, "next": "/private"})
        assert ok.status_code == 303 and ok.headers["location"] == "/private"
        cookie = c.cookies.get("vaultshield_pass")
        assert cookie
        assert (await c.get("/private")).status_code == 200
        # the same answer cannot be used twice
        again = await c.post(VERIFY_PATH, data={"token": token, "answer": answer})
        assert again.status_code == 403
        wrong = await c.post(VERIFY_PATH, data={"token": token[:-2] + "xx", "answer": answer})
        assert wrong.status_code == 403
    # the pass cookie is bound to the address it was issued to
    async with visitor(base, "127.0.10.2", cookies={"vaultshield_pass": cookie}) as other:
        assert (await other.get("/private")).status_code == 403


async def test_allowlist_never_blocked(
    client: httpx.AsyncClient, admin: dict[str, str], proxy: Any
) -> None:
    base = proxy["base"]
    await add_rule(
        client,
        admin,
        type="ip_block",
        value="127.0.0.0/16",
        priority=2,
        site_id=proxy["site"]["id"],
        action="log",
    )
    await add_rule(client, admin, type="user_agent_block", value="AllowProbe", priority=1)
    await wait_status(base, "127.0.12.1", 403, **{"user-agent": "AllowProbe"})
    assert await status_of(base, "127.0.11.7", **{"user-agent": "AllowProbe"}) == 200
    refused = await client.post(
        "/api/eshield/quarantine", json={"target": "127.0.11.7"}, headers=admin
    )
    assert refused.status_code == 400
    assert refused.json()["code"] == "QUARANTINE_PROTECTED"


async def test_geo_block_with_known_addresses(
    client: httpx.AsyncClient, admin: dict[str, str], proxy: Any
) -> None:
    base = proxy["base"]
    await add_rule(client, admin, type="geo_block", value="fr")
    await wait_status(base, "127.0.13.4", 403)
    assert await status_of(base, "127.0.14.4") == 200  # DE
    bad = await client.post(
        "/api/vaultshield/rules", json={"type": "geo_block", "value": "France"}, headers=admin
    )
    assert bad.status_code == 400


async def test_quarantine_enforced_then_released_at_expiry(
    client: httpx.AsyncClient, admin: dict[str, str], make_key: Any, database: Database, proxy: Any
) -> None:
    base = proxy["base"]
    target = "127.0.15.5"
    assert await status_of(base, target) == 200
    # loopback is protected: refused without force, force is admin-only
    plain = await client.post("/api/eshield/quarantine", json={"target": target}, headers=admin)
    assert plain.status_code == 400
    writer = auth(await make_key("write"))
    denied = await client.post(
        "/api/eshield/quarantine", json={"target": target, "force": True}, headers=writer
    )
    assert denied.status_code == 403
    created = await client.post(
        "/api/eshield/quarantine",
        json={"target": target, "reason": "test", "duration_hours": 0.001, "force": True},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    qid = created.json()["quarantine"]["id"]
    await wait_status(base, target, 403)
    listed = await client.get("/api/eshield/quarantine", headers=admin)
    assert qid in [q["id"] for q in listed.json()["quarantines"]]
    # 3.6 s later it lapses: the proxy lets the target through again, the job records it
    await eventually(lambda: _is(status_of(base, target), 200), timeout=20)

    async def released() -> bool:
        rows = await client.get("/api/eshield/quarantine?status=expired", headers=admin)
        return qid in [q["id"] for q in rows.json()["quarantines"]]

    await eventually(released, timeout=20)

    async def audited() -> bool:
        async with database.session() as session:
            entries = (
                await session.execute(
                    select(AuditEntry).where(AuditEntry.target == target).order_by(AuditEntry.seq)
                )
            ).scalars()
            actions = [(e.action, e.params.get("reason")) for e in entries]
        return ("quarantine", "test") in actions and (
            "quarantine_released",
            "expired",
        ) in actions

    await eventually(audited, timeout=20)  # the ledger entry follows the status change


async def test_manual_release(client: httpx.AsyncClient, admin: dict[str, str], proxy: Any) -> None:
    base = proxy["base"]
    created = await client.post(
        "/api/eshield/quarantine", json={"target": "127.0.16.0/24", "force": True}, headers=admin
    )
    qid = created.json()["quarantine"]["id"]
    await wait_status(base, "127.0.16.9", 403)
    duplicate = await client.post(
        "/api/eshield/quarantine", json={"target": "127.0.16.0/24", "force": True}, headers=admin
    )
    assert duplicate.status_code == 409
    released = await client.delete(f"/api/eshield/quarantine/{qid}", headers=admin)
    assert released.status_code == 200 and released.json()["quarantine"]["status"] == "released"
    await wait_status(base, "127.0.16.9", 200)
    assert (await client.delete(f"/api/eshield/quarantine/{qid}", headers=admin)).status_code == 404


async def test_shield_mode(
    client: httpx.AsyncClient, admin: dict[str, str], database: Database, proxy: Any
) -> None:
    """Shield mode through Sentry V's route: everyone off the allow-list must pass the
    challenge in the running proxy (propagation time is measured in evals/bench_shield.py),
    and the change is audited."""
    base, site_id = proxy["base"], proxy["site"]["id"]
    await _set_shield(client, admin, site_id, True)
    try:
        await wait_status(base, "127.0.17.1", 403)
        assert await status_of(base, "127.0.11.3") == 200  # allow-listed
        async with visitor(base, "127.0.17.2") as c:
            assert (await pass_challenge(c)).status_code == 303
            assert (await c.get("/")).status_code == 200
    finally:
        await _set_shield(client, admin, site_id, False)
    await wait_status(base, "127.0.17.1", 200)
    async with database.session() as session:
        rows = await session.execute(
            select(AuditEntry.params)
            .where(
                AuditEntry.action == "shield_mode_changed", AuditEntry.target == f"site:{site_id}"
            )
            .order_by(AuditEntry.seq)  # without it PostgreSQL may return them in any order
        )
        changes = [p.get("enabled") for p in rows.scalars()]
    assert changes[-2:] == [True, False], changes


async def test_sentry_probes_pass_shield_mode_and_nothing_else_does(
    client: httpx.AsyncClient, admin: dict[str, str], settings: Settings, proxy: Any
) -> None:
    """Shield mode must not make the site look down to its own monitor: a real Sentry probe
    carries a pass for this site, which the proxy honours like a solved challenge (and strips);
    a pass for another site, an expired or forged one, or one minted far ahead is challenged."""
    from tools.sentry.probes import ProbeConfig, probe
    from tools.vaultshield.challenge import PROBE_HEADER, PROBE_TTL, probe_pass, shield_secret

    base, site_id = proxy["base"], proxy["site"]["id"]
    secret = shield_secret()
    now = time.time()
    await _set_shield(client, admin, site_id, True)
    try:
        await wait_status(base, "127.0.21.1", 403)
        async with httpx.AsyncClient(timeout=10) as http:
            outcome = await probe(
                ProbeConfig(url=base + "/", site_id=site_id),
                client=http,
                previous_hash=None,
                now=dt.datetime.now(dt.UTC),
            )
            assert outcome.status_code == 200 and not outcome.failures, outcome.checks_dict()
            seen = await http.get(base + "/", headers={PROBE_HEADER: probe_pass(secret, site_id)})
            assert seen.status_code == 200 and seen.json()["probe_pass"] is None  # stripped
            unpassed = await probe(
                ProbeConfig(url=base + "/"),
                client=http,
                previous_hash=None,
                now=dt.datetime.now(dt.UTC),
            )
            assert unpassed.status_code == 403 and "http" in unpassed.failures
        # the scheduler's own entry point sends the pass for the site it probes
        from tools.sentry.scheduler import make_client, probe_site

        moved = await client.patch(f"/api/sites/{site_id}", json={"url": base}, headers=admin)
        assert moved.status_code == 200, moved.text
        try:
            async with make_client() as http:
                result = await probe_site(site_id, now=dt.datetime.now(dt.UTC), client=http)
            assert result is not None and result["ok"] and result["status_code"] == 200, result
        finally:
            await client.patch(
                f"/api/sites/{site_id}", json={"url": proxy["site"]["url"]}, headers=admin
            )
        refused = [
            probe_pass(secret, site_id + 1000),  # another site
            probe_pass(secret, site_id, now=now - PROBE_TTL - 10),  # expired
            probe_pass(secret, site_id, now=now + 3600),  # minted far ahead
            probe_pass(b"not the deployment's key" * 2, site_id),  # forged
            f"{site_id}.{int(now) + 60}.",  # no signature
        ]
        for value in refused:
            assert await status_of(base, "127.0.21.2", **{PROBE_HEADER: value}) == 403, value
        # a block rule still applies to a prober
        rule = await add_rule(
            client, admin, site_id=site_id, type="ip_block", value="127.0.21.3/32"
        )
        try:
            # shield mode already answers 403 (a challenge) without the pass: wait with it
            await wait_status(
                base, "127.0.21.3", 403, **{PROBE_HEADER: probe_pass(secret, site_id)}
            )
            async with visitor(base, "127.0.21.3") as c:
                got = await c.get("/", headers={PROBE_HEADER: probe_pass(secret, site_id)})
                assert got.status_code == 403 and "x-vaultshield" not in got.headers
        finally:
            await client.delete(f"/api/vaultshield/rules/{rule}", headers=admin)
    finally:
        await _set_shield(client, admin, site_id, False)
    await wait_status(base, "127.0.21.1", 200)


async def test_status_aggregates_proxy_statistics(
    client: httpx.AsyncClient, admin: dict[str, str], proxy: Any
) -> None:
    site_id = proxy["site"]["id"]

    async def counted() -> bool:
        body = (await client.get("/api/vaultshield/status", headers=admin)).json()
        site = next(s for s in body["sites"] if s["site_id"] == site_id)
        hour = site["traffic"]["last_hour"]
        return hour["blocked"] > 0 and hour["challenged"] > 0 and hour["rate_limited"] > 0

    await eventually(counted, timeout=15)
    body = (await client.get("/api/vaultshield/status", headers=admin)).json()
    assert body["success"] is True and body["active_rules"] > 0
    site = next(s for s in body["sites"] if s["site_id"] == site_id)
    assert site["protection"] == "normal"
    hour = site["traffic"]["last_hour"]
    assert hour["requests"] >= hour["allowed"] + hour["blocked"]
    assert hour["top_clients"] and hour["rule_hits"]
    assert body["traffic"]["last_day"]["requests"] >= hour["requests"]


async def _is(awaitable: Any, expected: int) -> bool:
    return bool(await awaitable == expected)


async def _set_shield(
    client: httpx.AsyncClient, headers: dict[str, str], site_id: int, enabled: bool
) -> None:
    response = await client.post(
        "/api/sentry/shield-mode", json={"site_id": site_id, "enabled": enabled}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["shield_mode"] is enabled and response.json()["propagated"] is True
