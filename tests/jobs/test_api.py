"""/api/jobs: list, filters, one job, cancel, the SSE event stream, schedules (read-only)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

import tests.jobs.handlers  # noqa: F401
from models import jobs, schedules
from models.db import Database
from tests.conftest import KeyFactory, auth
from tests.jobs.conftest import wait_status


def _events(body: str) -> list[dict[str, Any]]:
    out = []
    for block in body.split("\n\n"):
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        if data and any(line == "event: job" for line in block.splitlines()):
            out.append(json.loads("\n".join(data)))
    return out


async def test_list_get_and_filter(client: httpx.AsyncClient, make_key: KeyFactory) -> None:
    read = auth(await make_key("read"))
    ids = [await jobs.enqueue("test.noop", {"i": i}) for i in range(3)]
    for job_id in ids:
        await wait_status(job_id, "succeeded")
    r = await client.get("/api/jobs", params={"name": "test.noop", "limit": 2}, headers=read)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["limit"] == 2 and body["total"] >= 3
    assert [j["id"] for j in body["jobs"]] == sorted(ids, reverse=True)[:2]
    r = await client.get(
        "/api/v1/jobs", params={"status": "succeeded", "offset": 1, "limit": 500}, headers=read
    )
    assert r.status_code == 200 and all(j["status"] == "succeeded" for j in r.json()["jobs"])
    r = await client.get(f"/api/jobs/{ids[0]}", headers=read)
    job = r.json()["job"]
    assert job["status"] == "succeeded" and job["result"] == {"ok": True, "echo": {"i": 0}}
    assert job["priority"] == "normal" and job["progress"] == 1.0

    r = await client.get("/api/jobs", params={"status": "exploded"}, headers=read)
    assert r.status_code == 400 and r.json()["success"] is False
    r = await client.get("/api/jobs", params={"limit": 0}, headers=read)
    assert r.status_code == 400
    r = await client.get("/api/jobs/999999", headers=read)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    r = await client.get("/api/jobs")
    assert r.status_code == 401


async def test_cancel(client: httpx.AsyncClient, make_key: KeyFactory, tmp_path: Any) -> None:
    read, write = auth(await make_key("read")), auth(await make_key("write"))
    delayed = await jobs.enqueue("test.noop", {}, delay_seconds=3600)
    r = await client.post(f"/api/jobs/{delayed}/cancel", headers=read)
    assert r.status_code == 403
    r = await client.post(f"/api/jobs/{delayed}/cancel", headers=write)
    assert r.status_code == 200, r.text
    assert r.json()["job"]["status"] == "cancelled"
    r = await client.post(f"/api/jobs/{delayed}/cancel", headers=write)
    assert r.status_code == 409 and r.json()["code"] == "JOB_FINISHED"
    r = await client.post("/api/jobs/999999/cancel", headers=write)
    assert r.status_code == 404

    marker = tmp_path / "marker"
    running = await jobs.enqueue(
        "test.effect", {"marker": str(marker), "gate": str(tmp_path / "never")}
    )
    for _ in range(200):
        if marker.exists():
            break
        await asyncio.sleep(0.05)
    r = await client.post(f"/api/jobs/{running}/cancel", headers=write)
    assert r.status_code == 200 and r.json()["job"]["cancel_requested"] is True
    assert (await wait_status(running, "cancelled", "failed", "succeeded")).status == "cancelled"

    from models.ledger import entries_after

    entries = [e for e in await entries_after(0, limit=500) if e["action"] == "job.cancel"]
    assert {e["target"] for e in entries} >= {f"job:{delayed}", f"job:{running}"}


async def test_event_stream(client: httpx.AsyncClient, make_key: KeyFactory) -> None:
    read = auth(await make_key("read"))
    job_id = await jobs.enqueue("test.progress", {}, delay_seconds=0.5)
    r = await client.get(
        "/api/jobs/events", params={"job_id": job_id, "max_seconds": 30}, headers=read
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[0]["id"] == job_id and events[0]["status"] == "queued"
    assert events[-1]["status"] == "succeeded"
    assert all(e["id"] == job_id for e in events)

    # The unfiltered stream sees jobs changed by anyone while it runs.
    async def later() -> int:
        await asyncio.sleep(0.5)
        return await jobs.enqueue("test.noop", {"sse": True})

    task = asyncio.create_task(later())
    r = await client.get("/api/jobs/events", params={"max_seconds": 3}, headers=read)
    new_id = await task
    seen = {(e["id"], e["status"]) for e in _events(r.text)}
    assert (new_id, "succeeded") in seen

    r = await client.get("/api/jobs/events", params={"job_id": 999999}, headers=read)
    assert r.status_code == 404


async def test_schedules_read_only(
    client: httpx.AsyncClient, make_key: KeyFactory, database: Database
) -> None:
    async with database.session() as session:
        created = await schedules.create_schedule(
            session, name="api-hourly", cron="0 * * * *", job_name="test.noop"
        )
    r = await client.get("/api/jobs/schedules", headers=auth(await make_key("read")))
    assert r.status_code == 200
    assert any(s["id"] == created["id"] for s in r.json()["schedules"])
