"""Sites CRUD and the rule/quarantine API's validation (no proxy involved)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import auth


@pytest.fixture(scope="module")
async def keys(make_key: Any) -> dict[str, dict[str, str]]:
    return {s: auth(await make_key(s)) for s in ("read", "write", "admin")}


async def test_site_crud(client: httpx.AsyncClient, keys: dict[str, dict[str, str]]) -> None:
    created = await client.post(
        "/api/sites",
        json={"name": "blog", "url": "https://blog.example", "allowlist": ["10.0.0.1", "fd00::/8"]},
        headers=keys["write"],
    )
    assert created.status_code == 201, created.text
    site = created.json()["site"]
    assert site["allowlist"] == ["10.0.0.1/32", "fd00::/8"] and site["shield_mode"] is False
    sid = site["id"]
    listed = await client.get("/api/sites", headers=keys["read"])
    assert sid in [s["id"] for s in listed.json()["sites"]]
    patched = await client.patch(
        f"/api/sites/{sid}",
        json={"upstream_url": "http://127.0.0.1:9", "allowlist": []},
        headers=keys["write"],
    )
    assert patched.status_code == 200
    assert patched.json()["site"]["upstream_url"] == "http://127.0.0.1:9"
    assert patched.json()["site"]["url"] == "https://blog.example"
    duplicate = await client.post(
        "/api/sites", json={"name": "blog", "url": "https://x.example"}, headers=keys["write"]
    )
    assert duplicate.status_code == 409
    rule = await client.post(
        "/api/vaultshield/rules",
        json={"type": "ip_block", "value": "10.1.0.0/16", "site_id": sid},
        headers=keys["write"],
    )
    assert rule.status_code == 201
    assert (await client.delete(f"/api/sites/{sid}", headers=keys["write"])).status_code == 403
    assert (await client.delete(f"/api/sites/{sid}", headers=keys["admin"])).status_code == 200
    assert (await client.get(f"/api/sites/{sid}", headers=keys["read"])).status_code == 404
    rules = await client.get(f"/api/vaultshield/rules?site_id={sid}", headers=keys["read"])
    assert rules.json()["rules"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "url": "ftp://x.example"},
        {"name": "x", "url": "https://x.example", "allowlist": ["not-an-ip"]},
        {"name": "", "url": "https://x.example"},
        {"url": "https://x.example"},
    ],
)
async def test_site_validation(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]], body: dict[str, Any]
) -> None:
    response = await client.post("/api/sites", json=body, headers=keys["write"])
    assert response.status_code == 400
    assert response.json()["success"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"type": "ip_block", "value": "10.0.0.300"},
        {"type": "ip_block", "value": "2001:db8::/129"},
        {"type": "user_agent_block", "value": "/([a-z/"},
        {"type": "rate_limit", "value": "* lots"},
        {"type": "rate_limit", "value": "10.0.0.0/8 5/fortnight"},
        {"type": "geo_block", "value": "XYZ"},
        {"type": "port_block", "value": "22"},
        {"type": "ip_block", "value": "10.0.0.1", "action": "maybe"},
        {"type": "ip_block", "value": "10.0.0.1", "priority": 0},
        {"type": "ip_block", "value": "10.0.0.1", "site_id": 999999},
    ],
)
async def test_rule_validation(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]], body: dict[str, Any]
) -> None:
    response = await client.post("/api/vaultshield/rules", json=body, headers=keys["write"])
    assert response.status_code in (400, 404), response.text
    assert response.json()["success"] is False


async def test_rule_lifecycle_is_audited(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]]
) -> None:
    created = await client.post(
        "/api/vaultshield/rules",
        json={"type": "rate_limit", "value": "60/min", "action": "challenge", "priority": 3},
        headers=keys["write"],
    )
    assert created.status_code == 201
    rule = created.json()["rule"]
    assert rule["value"] == "* 60/min"
    assert (
        await client.delete(f"/api/vaultshield/rules/{rule['id']}", headers=keys["write"])
    ).status_code == 403
    deleted = await client.delete(f"/api/vaultshield/rules/{rule['id']}", headers=keys["admin"])
    assert deleted.status_code == 200
    audit = await client.get("/api/audit-log?limit=200", headers=keys["admin"])
    if audit.status_code == 200:  # the ledger helper's route; not on this branch yet
        actions = {e["action"] for e in audit.json().get("entries", [])}
        assert {"vaultshield_rule_added", "vaultshield_rule_deleted"} <= actions


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("not a host!", 400),
        ("127.0.0.1", 400),
        ("localhost", 400),
        ("::1", 400),
        ("0.0.0.0", 400),
        ("\U000109be\u00ec", 400),  # Unicode letters are not a host name (found by schemathesis)
        ("-edge", 400),
    ],
)
async def test_quarantine_refusals(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]], target: str, status: int
) -> None:
    response = await client.post(
        "/api/eshield/quarantine", json={"target": target}, headers=keys["write"]
    )
    assert response.status_code == status, response.text


def test_quarantine_targets_are_classified() -> None:
    from tools.eshield import _target_kind

    assert _target_kind("edge-01") == ("hostname", [])  # a single LDH label
    assert _target_kind("xn--bcher-kva.example") == ("hostname", [])  # an IDN, as punycode
    assert _target_kind("10.1.2.3") == ("ip", ["10.1.2.3/32"])
    assert _target_kind("10.1.2.0/24") == ("cidr", ["10.1.2.0/24"])


async def test_quarantine_and_release_by_target_via_service(
    client: httpx.AsyncClient, keys: dict[str, dict[str, str]], database: Any
) -> None:
    from tools.eshield import quarantine_target, release_quarantine

    async with database.session() as session:
        row = await quarantine_target(
            session, target="198.51.100.99", reason="agent", actor="agent:security"
        )
    assert row["kind"] == "ip" and row["target"] == "198.51.100.99"
    async with database.session() as session:
        released = await release_quarantine(session, target="198.51.100.99", actor="agent:x")
    assert released["id"] == row["id"] and released["status"] == "released"
    bad = await client.post(
        "/api/eshield/quarantine",
        json={"target": "198.51.100.98", "duration_hours": -1},
        headers=keys["write"],
    )
    assert bad.status_code == 400
