"""Webhooks end to end: API, signing, retries, 410, rotation, ping, redelivery, secrecy."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from models import ledger
from models.db import Database, utcnow
from models.webhooks import WebhookEndpoint
from tests.conftest import auth
from tests.webhooks.conftest import wait_for
from tests.webhooks.receiver import Receiver, Step, verify_fluxcybers, verify_standard


async def _create(client: httpx.AsyncClient, key: str, url: str, events: list[str]) -> Any:
    response = await client.post(
        "/api/webhooks", json={"url": url, "events": events}, headers=auth(key)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_list_get_delete(client: httpx.AsyncClient, make_key: Any) -> None:
    admin = await make_key("admin")
    writer = await make_key("write")
    created = await _create(client, writer, "https://hooks.example.com/x", ["command_executed"])
    assert created["success"] is True
    assert created["secret"].startswith("whsec_")
    hook = created["webhook"]
    assert hook["events"] == ["command_executed"] and hook["enabled"] is True

    listed = (await client.get("/api/webhooks", headers=auth(writer))).json()
    assert any(w["id"] == hook["id"] for w in listed["webhooks"])
    one = await client.get(f"/api/v1/webhooks/{hook['id']}", headers=auth(writer))
    assert one.status_code == 200 and one.json()["webhook"]["url"] == hook["url"]

    assert (
        await client.delete(f"/api/webhooks/{hook['id']}", headers=auth(writer))
    ).status_code == 403
    gone = await client.delete(f"/api/webhooks/{hook['id']}", headers=auth(admin))
    assert gone.status_code == 200
    missing = await client.get(f"/api/webhooks/{hook['id']}", headers=auth(admin))
    assert missing.status_code == 404 and missing.json()["success"] is False


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "VALIDATION_ERROR"),
        ({"url": "https://hooks.example.com/x"}, "VALIDATION_ERROR"),
        ({"url": "https://hooks.example.com/x", "events": []}, "VALIDATION_ERROR"),
        ({"url": "https://hooks.example.com/x", "events": ["no_such_event"]}, "VALIDATION_ERROR"),
        ({"url": "https://hooks.example.com/x", "events": ["ping"]}, "VALIDATION_ERROR"),
        ({"url": "http://hooks.example.com/x", "events": ["*"]}, "SSRF_BLOCKED"),
        ({"url": "https://169.254.169.254/", "events": ["*"]}, "SSRF_BLOCKED"),
        ({"url": "https://10.0.0.1/", "events": ["*"]}, "SSRF_BLOCKED"),
        ({"url": "not a url", "events": ["*"]}, "URL_INVALID"),
    ],
)
async def test_bad_bodies_are_refused(
    client: httpx.AsyncClient, make_key: Any, body: dict[str, Any], code: str
) -> None:
    key = await make_key("write")
    response = await client.post("/api/webhooks", json=body, headers=auth(key))
    assert response.status_code == 400, response.text
    assert response.json()["success"] is False
    assert response.json()["code"] == code


async def test_event_reference_lists_lifecycle_events(
    client: httpx.AsyncClient, make_key: Any
) -> None:
    key = await make_key("read")
    events = (await client.get("/api/webhooks/events", headers=auth(key))).json()["events"]
    for name in (
        "command_executed",
        "quarantine",
        "shield_mode_changed",
        "agent_task_completed",
        "agent_task_failed",
        "approval_requested",
        "incident_opened",
        "incident_resolved",
    ):
        assert name in events


async def test_ledger_events_are_delivered_signed_and_verifiable(
    client: httpx.AsyncClient, make_key: Any, receiver: Receiver
) -> None:
    key = await make_key("write")
    created = await _create(client, key, receiver.url, ["command_executed", "incident_opened"])
    secret = created["secret"]
    seq = await ledger.record(
        "command_executed",
        actor="key:1",
        server_id=7,
        params={"command": "uptime", "ratio": 1.0, "tiny": 1e-7, "name": "caf\u00e9 \u2603"},
        result={"exit_code": 0},
    )
    await ledger.record("server_created", actor="key:1", params={"name": "ignored"})
    await ledger.record("incident_opened", actor="system:sentry", params={"site_id": 3})
    await wait_for(lambda: len(receiver.unique_ids()) >= 2)

    by_type = {r.event["type"]: r for r in receiver.received}
    assert set(by_type) == {"command_executed", "incident_opened"}
    delivery = by_type["command_executed"]
    assert delivery.id == f"evt_{seq}"
    assert delivery.event["data"]["params"]["command"] == "uptime"
    assert delivery.headers["content-type"] == "application/json"
    assert verify_fluxcybers(secret, delivery.headers, delivery.body)
    assert verify_standard(secret, delivery.headers, delivery.body)
    assert not verify_fluxcybers("whsec_" + "A" * 44, delivery.headers, delivery.body)
    # compact, UTF-8; the data is the ledger entry as stored: the ledger keeps floats as
    # strings (docs/ledger.md), so JavaScript float formatting is checked in
    # test_payload_and_schedule.py, and integers here
    assert b", " not in delivery.body and b": " not in delivery.body
    assert "caf\u00e9 \u2603".encode() in delivery.body
    assert b'"ratio":"1.0"' in delivery.body and b'"tiny":"1e-07"' in delivery.body
    assert b'"exit_code":0' in delivery.body

    hook_id = created["webhook"]["id"]
    await wait_for(lambda: _all_status(client, key, hook_id, "delivered", count=2))
    log = await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth(key))
    rows = log.json()["deliveries"]
    assert all(r["attempt_log"][0]["status_code"] == 200 for r in rows)
    assert all(r["attempt_log"][0]["latency_ms"] is not None for r in rows)


async def test_flaky_receiver_gets_every_event_exactly_once_after_dedup(
    client: httpx.AsyncClient, make_key: Any, receiver: Receiver
) -> None:
    key = await make_key("write")
    created = await _create(client, key, receiver.url, ["quarantine"])
    receiver.plan(
        Step("status", 500),
        Step("sleep", seconds=1.6),  # past the 1 s timeout
        Step("status", 503, {"Retry-After": "1"}),
        Step("status", 429),
    )
    seqs = [
        await ledger.record("quarantine", actor="agent:security", target=f"10.9.0.{i}")
        for i in range(5)
    ]
    expected = {f"evt_{s}" for s in seqs}
    await wait_for(lambda: expected <= receiver.acknowledged_ids(), timeout=60)
    assert receiver.unique_ids() == expected
    assert len(receiver.received) > len(expected)  # retries happened
    for record in receiver.received:
        assert verify_fluxcybers(created["secret"], record.headers, record.body)

    hook_id = created["webhook"]["id"]

    async def all_delivered() -> bool:
        rows = (await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth(key))).json()
        return len(rows["deliveries"]) == 5 and all(
            d["status"] == "delivered" for d in rows["deliveries"]
        )

    await wait_for(all_delivered, timeout=30)
    rows = (await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth(key))).json()
    errors = [a["error"] for d in rows["deliveries"] for a in d["attempt_log"] if a["error"]]
    assert any("HTTP 500" in e for e in errors)
    assert any("timed out" in e for e in errors)
    # Retry-After: 1 was honoured (the schedule alone would have retried after 0.2-0.5 s)
    for d in rows["deliveries"]:
        log = d["attempt_log"]
        for before, after in itertools.pairwise(log):
            if before["status_code"] == 503:
                gap = dt.datetime.fromisoformat(after["started_at"]) - dt.datetime.fromisoformat(
                    before["started_at"]
                )
                assert gap >= dt.timedelta(seconds=1)
    hook = (await client.get(f"/api/webhooks/{hook_id}", headers=auth(key))).json()["webhook"]
    assert hook["enabled"] is True and hook["failing_since"] is None


async def test_410_disables_the_endpoint_visibly(
    client: httpx.AsyncClient, make_key: Any, receiver: Receiver
) -> None:
    key = await make_key("write")
    created = await _create(client, key, receiver.url, ["playbook_run"])
    hook_id = created["webhook"]["id"]
    receiver.plan(Step("status", 410))
    await ledger.record("playbook_run", actor="key:1", params={"playbook": "restart-nginx"})

    async def disabled() -> Any:
        hook = (await client.get(f"/api/webhooks/{hook_id}", headers=auth(key))).json()
        return hook["webhook"] if not hook["webhook"]["enabled"] else None

    hook = await wait_for(disabled)
    assert "410" in hook["disabled_reason"]
    await wait_for(lambda: _has_ledger_action("webhook_disabled"))
    await ledger.record("playbook_run", actor="key:1", params={"playbook": "second"})
    await ledger.record("server_created", actor="key:1")  # a marker other hooks may see
    assert len(receiver.received) == 1  # nothing more goes to a disabled endpoint
    rows = (await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth(key))).json()
    assert rows["deliveries"][0]["status"] == "failed"
    assert rows["deliveries"][0]["last_status_code"] == 410

    again = await client.patch(
        f"/api/webhooks/{hook_id}", json={"enabled": True}, headers=auth(key)
    )
    assert again.json()["webhook"]["enabled"] is True
    assert again.json()["webhook"]["disabled_reason"] is None


async def _has_ledger_action(action: str) -> bool:
    return any(e["action"] == action for e in await ledger.entries_after(-1, limit=100_000))


async def test_endpoint_failing_for_days_is_disabled_with_reason(
    client: httpx.AsyncClient, make_key: Any, receiver: Receiver, database: Database
) -> None:
    key = await make_key("write")
    created = await _create(client, key, receiver.url, ["shield_mode_changed"])
    hook_id = created["webhook"]["id"]
    async with database.session() as session:
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == hook_id)
            .values(failing_since=utcnow() - dt.timedelta(days=4))
        )
    receiver.plan(Step("status", 500))
    await ledger.record("shield_mode_changed", actor="key:1", params={"enabled": True})

    async def disabled() -> Any:
        hook = (await client.get(f"/api/webhooks/{hook_id}", headers=auth(key))).json()
        return hook["webhook"] if not hook["webhook"]["enabled"] else None

    hook = await wait_for(disabled)
    assert hook["disabled_reason"].startswith("failing since")
    assert "HTTP 500" in hook["disabled_reason"]


async def test_rotation_signs_with_both_secrets_during_grace(
    client: httpx.AsyncClient, make_key: Any, receiver: Receiver
) -> None:
    key = await make_key("write")
    created = await _create(client, key, receiver.url, ["vaultshield_rule_added"])
    hook_id, old = created["webhook"]["id"], created["secret"]
    rotated = await client.post(
        f"/api/webhooks/{hook_id}/rotate-secret", json={"grace_hours": 1}, headers=auth(key)
    )
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["webhook"]["previous_secret_valid_until"]
    await ledger.record("vaultshield_rule_added", actor="key:1", params={"type": "ip_block"})
    await wait_for(lambda: receiver.received)
    got = receiver.received[0]
    for secret in (old, new):
        assert verify_fluxcybers(secret, got.headers, got.body)
        assert verify_standard(secret, got.headers, got.body)

    await client.post(
        f"/api/webhooks/{hook_id}/rotate-secret", json={"grace_hours": 0}, headers=auth(key)
    )
    ping = (await client.post(f"/api/webhooks/{hook_id}/ping", headers=auth(key))).json()
    assert ping["ping"]["delivered"] is True
    last = receiver.received[-1]
    assert not verify_fluxcybers(new, last.headers, last.body)  # grace 0: only the newest signs


async def test_ping_reports_the_outcome(
    client: httpx.AsyncClient, make_key: Any, receiver: Receiver
) -> None:
    key = await make_key("write")
    created = await _create(client, key, receiver.url, ["site_deleted"])  # no strays
    hook_id = created["webhook"]["id"]
    ok = (await client.post(f"/api/webhooks/{hook_id}/ping", headers=auth(key))).json()["ping"]
    assert ok["delivered"] is True and ok["status_code"] == 200 and ok["latency_ms"] >= 0
    ping = receiver.of_type("ping")[-1]
    assert verify_fluxcybers(created["secret"], ping.headers, ping.body)

    receiver.plan(Step("status", 500))
    bad = (await client.post(f"/api/webhooks/{hook_id}/ping", headers=auth(key))).json()["ping"]
    assert bad["delivered"] is False and bad["status_code"] == 500 and "500" in bad["error"]
    # a ping never disables nor retries
    hook = (await client.get(f"/api/webhooks/{hook_id}", headers=auth(key))).json()["webhook"]
    assert hook["enabled"] is True

    missing = await client.post("/api/webhooks/999999/ping", headers=auth(key))
    assert missing.status_code == 404


async def test_ping_to_a_dead_port_reports_the_error(
    client: httpx.AsyncClient, make_key: Any
) -> None:
    import socket

    key = await make_key("write")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
        created = await _create(client, key, url, ["command_executed"])
        hook_id = created["webhook"]["id"]
        result = (await client.post(f"/api/webhooks/{hook_id}/ping", headers=auth(key))).json()
    assert result["ping"]["delivered"] is False
    assert result["ping"]["status_code"] is None
    assert result["ping"]["error"].startswith("FETCH_FAILED")
    await client.delete(f"/api/webhooks/{hook_id}", headers=auth(await make_key("admin")))


async def test_redeliver_sends_the_same_event_again(
    client: httpx.AsyncClient, make_key: Any, receiver: Receiver
) -> None:
    key = await make_key("write")
    created = await _create(client, key, receiver.url, ["server_deleted"])
    hook_id = created["webhook"]["id"]
    await ledger.record("server_deleted", actor="key:1", server_id=5)
    await wait_for(lambda: receiver.received)
    rows = (await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth(key))).json()
    delivery_id = rows["deliveries"][0]["id"]
    await wait_for(lambda: _delivery_status(client, key, hook_id, "delivered"))
    again = await client.post(
        f"/api/webhooks/{hook_id}/deliveries/{delivery_id}/redeliver", headers=auth(key)
    )
    assert again.status_code == 200 and again.json()["delivery"]["status"] == "pending"
    await wait_for(lambda: len(receiver.received) >= 2)
    assert receiver.received[0].id == receiver.received[1].id
    assert receiver.received[0].body == receiver.received[1].body
    missing = await client.post(
        f"/api/webhooks/{hook_id}/deliveries/999999/redeliver", headers=auth(key)
    )
    assert missing.status_code == 404


async def _all_status(
    client: httpx.AsyncClient, key: str, hook_id: int, status: str, *, count: int
) -> bool:
    rows = (await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth(key))).json()
    found = rows["deliveries"]
    return len(found) == count and all(d["status"] == status for d in found)


async def _delivery_status(client: httpx.AsyncClient, key: str, hook_id: int, status: str) -> bool:
    rows = (await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth(key))).json()
    return bool(rows["deliveries"]) and rows["deliveries"][0]["status"] == status


async def test_secret_never_appears_after_creation(
    client: httpx.AsyncClient,
    make_key: Any,
    receiver: Receiver,
    database: Database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key = await make_key("admin")
    created = await _create(client, key, receiver.url, ["*"])
    hook_id, secret = created["webhook"]["id"], created["secret"]
    rotated = await client.post(f"/api/webhooks/{hook_id}/rotate-secret", headers=auth(key))
    secret2 = rotated.json()["secret"]
    await ledger.record("command_executed", actor="key:1")
    await wait_for(lambda: receiver.received)
    responses = [
        await client.get("/api/webhooks", headers=auth(key)),
        await client.get(f"/api/webhooks/{hook_id}", headers=auth(key)),
        await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=auth(key)),
        await client.post(f"/api/webhooks/{hook_id}/ping", headers=auth(key)),
        await client.patch(
            f"/api/webhooks/{hook_id}", json={"description": "x"}, headers=auth(key)
        ),
        await client.get("/api/openapi.json"),
    ]
    ledger_text = json.dumps(await ledger.entries_after(-1, limit=100_000))
    async with database.session() as session:
        stored = (await session.execute(select(WebhookEndpoint))).scalars().all()
        stored_text = " ".join(
            f"{e.secret_encrypted} {e.previous_secret_encrypted}" for e in stored
        )
    deleted = await client.delete(f"/api/webhooks/{hook_id}", headers=auth(key))
    for value in (secret, secret2, secret.removeprefix("whsec_"), secret2.removeprefix("whsec_")):
        for response in [*responses, deleted]:
            assert value not in response.text
        assert value not in ledger_text
        assert value not in caplog.text
        assert value not in stored_text  # encrypted at rest
    assert any("webhook attempt" in r.getMessage() for r in caplog.records)


async def test_racing_dispatchers_fan_out_each_event_once(
    client: httpx.AsyncClient, make_key: Any, receiver: Receiver, database: Database
) -> None:
    """The cursor is a compare-and-set: concurrent fan-outs never duplicate a delivery."""
    import asyncio

    from models.webhooks import WebhookDelivery
    from tools.webhooks.dispatcher import fan_out_once

    key = await make_key("write")
    created = await _create(client, key, receiver.url, ["threat_feed_imported"])
    seqs = [await ledger.record("threat_feed_imported", actor="x") for _ in range(6)]
    # the app's own dispatcher races these two as well
    await asyncio.gather(fan_out_once(), fan_out_once(), fan_out_once())
    expected = {f"evt_{s}" for s in seqs}
    await wait_for(lambda: expected <= receiver.acknowledged_ids())
    async with database.session() as session:
        rows = (
            await session.execute(
                select(WebhookDelivery.event_id).where(
                    WebhookDelivery.endpoint_id == created["webhook"]["id"]
                )
            )
        ).scalars()
        assert sorted(rows) == sorted(expected)
