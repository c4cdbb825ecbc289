"""POST /api/sentry/shield-mode: the site flag, the incident timeline, the ledger, the proxies."""

from __future__ import annotations

import sys
import types

import httpx
import pytest

from models import ledger
from models.db import Database
from models.sites import Site
from tests.conftest import auth
from tests.sentry.conftest import FakeClock, SiteFactory, Upstream
from tools import sentry
from tools.sentry.scheduler import probe_site


async def test_shield_mode_on_and_off_during_an_incident(
    client: httpx.AsyncClient,
    make_key,
    database: Database,
    make_site: SiteFactory,
    upstream: Upstream,
    clock: FakeClock,
    probe_client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site_id = await make_site(upstream.url)
    upstream.script.extend([500, 500, 500])
    for _ in range(3):
        await probe_site(site_id, now=clock.advance(60), client=probe_client)
    published: list[str] = []
    stand_in = types.ModuleType("tools.vaultshield")  # the traffic module is not merged yet
    stand_in.publish_rules_changed = lambda: published.append("reload")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tools.vaultshield", stand_in)
    key = await make_key("write")

    on = await client.post(
        "/api/sentry/shield-mode", json={"site_id": site_id, "enabled": True}, headers=auth(key)
    )
    assert on.status_code == 200, on.text
    body = on.json()
    assert body["success"] and body["shield_mode"] is True and body["previous"] is False
    assert body["changed"] and body["propagated"] and published == ["reload"]
    async with database.session() as session:
        assert (await session.get(Site, site_id)).shield_mode is True

    off = await client.post(
        "/api/sentry/shield-mode", json={"site_id": site_id, "enabled": False}, headers=auth(key)
    )
    assert off.json()["shield_mode"] is False and off.json()["incident_id"] == body["incident_id"]

    async with database.session() as session:
        page = await sentry.list_incidents(session, status="open", limit=200)
    [incident] = [i for i in page["incidents"] if i["site_id"] == site_id]
    changes = [e for e in incident["timeline"] if e["kind"] == "shield_mode_changed"]
    assert [c["data"]["enabled"] for c in changes] == [True, False]
    assert changes[0]["actor"].startswith("key:") and changes[0]["data"]["request_id"]

    entries = await ledger.entries_after(-1, limit=10_000)
    audited = [
        e
        for e in entries
        if e["action"] == "shield_mode_changed" and e["target"] == f"site:{site_id}"
    ]
    assert [e["params"]["enabled"] for e in audited] == [True, False]
    assert audited[0]["result"]["incident_id"] == incident["id"]


async def test_without_the_traffic_module_shield_mode_still_applies(
    database: Database, make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tools.vaultshield", None)  # import raises ImportError
    site_id = await make_site("http://127.0.0.1:9/")
    async with database.session() as session:
        result = await sentry.set_shield_mode(
            session, site_id=site_id, enabled=True, actor="agent:security"
        )
    assert result == {
        "site_id": site_id,
        "shield_mode": True,
        "previous": False,
        "changed": True,
        "incident_id": None,
        "propagated": False,
    }


async def test_scopes_and_bad_input(
    client: httpx.AsyncClient, make_key, make_site: SiteFactory
) -> None:
    site_id = await make_site("http://127.0.0.1:9/")
    read, write = await make_key("read"), await make_key("write")
    url = "/api/sentry/shield-mode"
    good = {"site_id": site_id, "enabled": True}
    assert (await client.post(url, json=good)).status_code == 401
    denied = await client.post(url, json=good, headers=auth(read))
    assert denied.status_code == 403
    missing = await client.post(url, json={"site_id": 999999, "enabled": True}, headers=auth(write))
    assert missing.status_code == 404 and missing.json()["code"] == "SITE_NOT_FOUND"
    for body in (
        {},
        {"site_id": site_id},
        {"site_id": site_id, "enabled": "yes"},
        {"site_id": "1", "enabled": True},
        {**good, "extra": 1},
    ):
        response = await client.post(url, json=body, headers=auth(write))
        assert response.status_code == 400, body
        assert response.json()["code"] == "VALIDATION_ERROR"
