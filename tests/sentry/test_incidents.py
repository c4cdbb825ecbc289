"""The incident state machine against a real flapping upstream, and GET /api/sentry/incidents."""

from __future__ import annotations

import httpx

from models import ledger
from models.db import Database
from models.sentry import Incident, IncidentEvent
from tests.conftest import auth
from tests.sentry.conftest import FakeClock, SiteFactory, Upstream
from tools import sentry
from tools.sentry.scheduler import probe_site


async def drive(
    site_id: int, statuses: list[int], up: Upstream, clock: FakeClock, client: httpx.AsyncClient
) -> list[str | None]:
    """One probe per scripted status, a minute apart; the incident transition of each."""
    up.script.extend(statuses)
    transitions = []
    for _ in statuses:
        result = await probe_site(site_id, now=clock.advance(60), client=client)
        assert result is not None
        transitions.append(result["incident"])
    return transitions


async def ledger_actions(site_id: int) -> list[str]:
    entries = await ledger.entries_after(-1, limit=10_000)
    return [e["action"] for e in entries if e["target"] == f"site:{site_id}"]


async def site_incidents(database: Database, site_id: int) -> list[dict]:
    async with database.session() as session:
        page = await sentry.list_incidents(session, limit=200)
    return [i for i in page["incidents"] if i["site_id"] == site_id]


async def test_flapping_upstream_opens_one_incident_and_resolves_after_two_successes(
    database: Database,
    make_site: SiteFactory,
    upstream: Upstream,
    clock: FakeClock,
    probe_client: httpx.AsyncClient,
) -> None:
    site_id = await make_site(upstream.url)
    flapping = [500, 500, 200, 500, 500, 200, 500, 500, 200]  # never 3 failures in a row
    assert await drive(site_id, flapping, upstream, clock, probe_client) == [None] * 9
    assert await site_incidents(database, site_id) == []

    still_flapping = [500, 500, 500, 200, 500, 200, 500, 200, 500]
    transitions = await drive(site_id, still_flapping, upstream, clock, probe_client)
    assert transitions == [None, None, "incident_opened"] + [None] * 6  # 1 success: still open
    [incident] = await site_incidents(database, site_id)
    assert incident["status"] == "open" and incident["severity"] == "high"

    assert await drive(site_id, [200, 200, 200], upstream, clock, probe_client) == [
        None,
        "incident_resolved",
        None,
    ]
    [incident] = await site_incidents(database, site_id)
    assert incident["status"] == "resolved" and incident["resolution"] == "resolved"
    kinds = [e["kind"] for e in incident["timeline"]]
    assert kinds[0] == "opened" and kinds[-1] == "resolved"
    assert kinds.count("probe_recovered") == 4 and kinds.count("probe_failed") == 3
    assert await ledger_actions(site_id) == ["incident_opened", "incident_resolved"]


async def test_a_long_timeline_shows_its_opening_and_latest_events(
    database: Database, make_site: SiteFactory
) -> None:
    site_id = await make_site("http://127.0.0.1:9/")
    async with database.session() as session:
        incident = Incident(site_id=site_id, status="open", severity="low", title="t", failures=[])
        session.add(incident)
        await session.flush()
        for n in range(150):
            session.add(IncidentEvent(incident_id=incident.id, kind="probe_failed", message=str(n)))
    [shown] = await site_incidents(database, site_id)
    assert shown["timeline_total"] == 150 and len(shown["timeline"]) == 100
    assert [e["message"] for e in shown["timeline"][:2]] == ["0", "51"]
    assert shown["timeline"][-1]["message"] == "149"


async def test_severity_escalates_and_the_timeline_records_it(
    database: Database,
    make_site: SiteFactory,
    upstream: Upstream,
    clock: FakeClock,
    probe_client: httpx.AsyncClient,
) -> None:
    site_id = await make_site(upstream.url)
    await drive(site_id, [404, 404, 404], upstream, clock, probe_client)
    [incident] = await site_incidents(database, site_id)
    assert incident["severity"] == "medium" and incident["failures"] == ["http"]
    assert incident["timeline"][0]["data"]["status_code"] == 404

    await drive(site_id, [503, 404], upstream, clock, probe_client)
    [incident] = await site_incidents(database, site_id)
    assert incident["severity"] == "high"  # escalated, never lowered while open
    change = next(e for e in incident["timeline"] if e["kind"] == "severity_changed")
    assert change["data"] == {"from": "medium", "to": "high"}

    async with database.session() as session:
        note = await sentry.note_incident_action(
            session, site_id=site_id, message="restarted nginx", actor="agent:remediation"
        )
    assert note["incident_id"] == incident["id"]
    [incident] = await site_incidents(database, site_id)
    assert incident["timeline"][-1]["kind"] == "agent_action"
    assert incident["timeline"][-1]["actor"] == "agent:remediation"


async def test_incident_list_filters_and_pagination(
    client: httpx.AsyncClient, make_key, database: Database, make_site: SiteFactory
) -> None:
    site_id = await make_site("http://127.0.0.1:9/")
    async with database.session() as session:
        for n, (status, severity) in enumerate(
            [("open", "critical"), ("resolved", "critical"), ("resolved", "low")] * 3
        ):
            session.add(
                Incident(
                    site_id=site_id, status=status, severity=severity, title=f"i{n}", failures=[]
                )
            )
    key = await make_key("read")

    async def get(**params: object) -> dict:
        response = await client.get("/api/sentry/incidents", params=params, headers=auth(key))
        assert response.status_code == 200, response.text
        return response.json()

    everything = await get(limit=200)
    assert everything["success"] is True and everything["total"] >= 9
    crit_resolved = await get(status="resolved", severity="critical", limit=200)
    assert all(
        i["status"] == "resolved" and i["severity"] == "critical"
        for i in crit_resolved["incidents"]
    )
    assert len([i for i in crit_resolved["incidents"] if i["site_id"] == site_id]) == 3
    opened = await get(status="open", limit=200)
    assert all(i["status"] == "open" for i in opened["incidents"])

    first, second = await get(limit=4, offset=0), await get(limit=4, offset=4)
    ids = [i["id"] for i in first["incidents"]] + [i["id"] for i in second["incidents"]]
    assert len(ids) == len(set(ids)) == 8
    assert ids == [i["id"] for i in everything["incidents"][:8]]
    assert (await get())["limit"] == 50
    mine = await get(site_id=site_id, status="open")
    assert mine["total"] == 3 and {i["site_id"] for i in mine["incidents"]} == {site_id}


async def test_incident_list_rejects_bad_input(client: httpx.AsyncClient, make_key) -> None:
    key = await make_key("read")
    for params in (
        {"status": "closed"},
        {"severity": "urgent"},
        {"limit": 0},
        {"limit": 500},
        {"offset": -1},
        {"limit": "many"},
    ):
        response = await client.get("/api/sentry/incidents", params=params, headers=auth(key))
        assert response.status_code == 400, params
        body = response.json()
        assert body["success"] is False and body["code"] == "VALIDATION_ERROR"
        assert body["fields"][0]["field"] == next(iter(params))
    assert (await client.get("/api/sentry/incidents")).status_code == 401
