"""Playbooks through the API and the job queue, on SQLite and PostgreSQL, against real sshd.

Only the harmless test playbooks in tests/executor/playbooks are ever executed; the shipped
ones are dry-run (rendered, never run).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models import jobs
from models import playbooks as playbook_repo
from models.db import get_database
from models.ledger import entries_after
from tests.conftest import auth
from tests.executor.conftest import create_server, server_body
from tests.executor.sshd import Keys, SshdFarm
from tools.playbooks import execute_run


async def _ids(client: httpx.AsyncClient, key: str) -> dict[str, int]:
    response = await client.get("/api/playbooks", headers=auth(key))
    assert response.status_code == 200
    return {p["name"]: p["id"] for p in response.json()["playbooks"]}


async def _wait(client: httpx.AsyncClient, key: str, run_id: int) -> dict:
    for _ in range(300):  # bounded: 60 s at most
        run = (await client.get(f"/api/playbooks/runs/{run_id}", headers=auth(key))).json()
        if run["status"] in {"succeeded", "failed"}:
            return run
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {run}")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh directory under /tmp (the test playbooks only accept /tmp paths)."""
    path = Path("/tmp") / f"ef-pb-{uuid.uuid4().hex[:10]}"
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_list_and_get(client: httpx.AsyncClient, make_key) -> None:
    key = await make_key("read")
    listing = (await client.get("/api/playbooks", headers=auth(key))).json()
    assert listing["success"] is True
    by_name = {p["name"]: p for p in listing["playbooks"]}
    shipped = {
        "restart-service",
        "clear-disk-space",
        "rotate-logs",
        "patch-package",
        "collect-diagnostics",
    }
    assert shipped <= set(by_name)
    assert "test-broken" not in by_name  # invalid file skipped
    assert by_name["restart-service"]["step_count"] == 5
    assert "last_execution" in by_name["restart-service"]
    one = await client.get(f"/api/playbooks/{by_name['patch-package']['id']}", headers=auth(key))
    assert one.json()["playbook"]["params"][0]["name"] == "package"
    assert (await client.get("/api/playbooks/999999", headers=auth(key))).status_code == 404


async def test_dry_run_of_every_shipped_playbook(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    ids = await _ids(client, key)
    params = {"restart-service": {"service": "nginx"}, "patch-package": {"package": "openssl"}}
    for name in (
        "restart-service",
        "clear-disk-space",
        "rotate-logs",
        "patch-package",
        "collect-diagnostics",
    ):
        response = await client.post(
            f"/api/playbooks/{ids[name]}/run",
            json={"server_id": sid, "dry_run": True, "params": params.get(name, {})},
            headers=auth(key),
        )
        assert response.status_code == 202, response.text
        data = response.json()
        assert data["dry_run"] is True and data["status"] == "validated" and data["plan"]
        assert data["run_id"] is None
    plan = (
        await client.post(
            f"/api/playbooks/{ids['restart-service']}/run",
            json={"server_id": sid, "dry_run": True, "params": {"service": "nginx"}},
            headers=auth(key),
        )
    ).json()["plan"]
    assert plan[2]["command"] == "systemctl restart -- nginx"
    dry = [e for e in await entries_after(0, limit=100_000) if e["action"] == "playbook_run"]
    assert any(e["result"].get("status") == "validated" for e in dry)


async def test_bad_requests_name_the_field(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    pid = (await _ids(client, key))["restart-service"]
    cases = [
        ({"dry_run": True, "params": {"service": "nginx"}}, "server_id"),
        ({"server_id": sid, "dry_run": True, "params": {}}, "params.service"),
        ({"server_id": sid, "dry_run": True, "params": {"service": "x", "y": 1}}, "params.y"),
        (
            {"server_id": sid, "dry_run": True, "params": {"service": "a b; rm -rf /tmp/q"}},
            "params.service",
        ),
    ]
    for body, field in cases:
        response = await client.post(f"/api/playbooks/{pid}/run", json=body, headers=auth(key))
        assert response.status_code == 400, response.text
        assert response.json()["fields"][0]["field"] == field
    missing = await client.post(
        f"/api/playbooks/{pid}/run",
        json={"server_id": 999999, "params": {"service": "x"}},
        headers=auth(key),
    )
    assert missing.status_code == 404


async def test_run_succeeds_with_per_step_results(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys, workdir: Path
) -> None:
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    pid = (await _ids(client, key))["test-touch-file"]
    queued = await client.post(
        f"/api/playbooks/{pid}/run",
        json={"server_id": sid, "params": {"directory": str(workdir), "text": "hi there"}},
        headers=auth(key),
    )
    assert queued.status_code == 202, queued.text
    run = await _wait(client, key, queued.json()["run_id"])
    assert run["status"] == "succeeded", run
    assert [s["status"] for s in run["steps"]] == ["ok", "ok"]
    assert run["steps"][1]["stdout"] == "hi there"
    assert (workdir / "out.txt").read_text() == "hi there"
    listing = (await client.get("/api/playbooks", headers=auth(key))).json()["playbooks"]
    last = next(p for p in listing if p["id"] == pid)["last_execution"]
    assert last["status"] == "succeeded" and last["server_id"] == sid
    assert last["duration_ms"] is not None
    audited = [
        e
        for e in await entries_after(0, limit=100_000)
        if e["action"] == "playbook_run" and e["params"].get("run_id") == run["run_id"]
    ]
    assert [e["params"]["phase"] for e in audited] == ["step", "step", "finished"]


async def test_failure_rolls_back_completed_steps(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys, workdir: Path
) -> None:
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    pid = (await _ids(client, key))["test-rollback"]
    queued = await client.post(
        f"/api/playbooks/{pid}/run",
        json={"server_id": sid, "params": {"directory": str(workdir)}},
        headers=auth(key),
    )
    run = await _wait(client, key, queued.json()["run_id"])
    assert run["status"] == "failed" and "fails" in run["error"]
    phases = [(s["phase"], s["name"], s["status"]) for s in run["steps"]]
    assert phases == [
        ("step", "first", "ok"),
        ("step", "second", "ok"),
        ("step", "tolerated failure", "failed"),
        ("step", "fails", "failed"),
        ("rollback", "second", "ok"),
        ("rollback", "first", "ok"),
    ]
    assert sorted(p.name for p in workdir.iterdir()) == [
        "first",
        "first-rolled-back",
        "second",
        "second-rolled-back",
    ]


async def test_redelivered_run_repeats_no_step(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys, workdir: Path
) -> None:
    """A playbook job taken over after its worker died (found by the cluster test): the step
    the first attempt completed is replayed, the one it was running is not run again (its
    outcome is unknown: the run fails there), and the completed step is rolled back once."""
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    async with get_database().session() as session:
        playbook = await playbook_repo.get_playbook(session, "test-rollback")
        assert playbook is not None
        run = playbook_repo.PlaybookRun(
            playbook_id=playbook.id,
            server_id=sid,
            params={"directory": str(workdir)},
            actor="test",
        )
        session.add(run)
    # The first attempt's job record: step 0 done ("first" touched), step 1 started, then lost.
    job_id = await jobs.enqueue("playbook.run", {"run_id": run.id}, delay_seconds=3600)
    first = {"index": 0, "name": "first", "phase": "step", "command": "touch", "status": "ok"}
    ctx = jobs.JobContext(
        job_id,
        "playbook.run",
        {"run_id": run.id},
        attempt=2,
        steps={"started:step:0": None, "step:0": first, "started:step:1": None},
    )
    view = await execute_run(run.id, ctx=ctx)
    assert view["status"] == "failed" and "second" in view["error"]
    phases = [(s["phase"], s["name"], s["status"]) for s in view["steps"]]
    assert phases == [
        ("step", "first", "ok"),
        ("step", "second", "error"),
        ("rollback", "first", "ok"),
    ]
    assert view["steps"][1]["error"]["code"] == "WORKER_LOST"
    # Nothing ran twice: neither replayed nor interrupted step touched its file again.
    assert sorted(p.name for p in workdir.iterdir()) == ["first-rolled-back"]
    assert set(ctx.steps) >= {"step:1", "rollback:0"}
    rerun = await execute_run(run.id, ctx=ctx)  # a third delivery replays everything
    assert [s["status"] for s in rerun["steps"]] == ["ok", "error", "ok"]
    assert sorted(p.name for p in workdir.iterdir()) == ["first-rolled-back"]


PAYLOADS = [
    "; touch {m}",
    "$(touch {m})",
    "`touch {m}`",
    "a\ntouch {m}",
    "'; touch {m}; echo '",
    "; rm -rf {d}/victim",
]


async def test_parameter_injection_runs_harmlessly(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys, workdir: Path
) -> None:
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    pid = (await _ids(client, key))["test-touch-file"]
    victim = workdir / "victim"
    victim.mkdir()
    for payload in PAYLOADS:
        marker = Path("/tmp") / f"x-{uuid.uuid4().hex}"
        text = payload.format(m=marker, d=workdir)
        queued = await client.post(
            f"/api/playbooks/{pid}/run",
            json={"server_id": sid, "params": {"directory": str(workdir), "text": text}},
            headers=auth(key),
        )
        run = await _wait(client, key, queued.json()["run_id"])
        assert run["status"] == "succeeded", run
        assert (workdir / "out.txt").read_text() == text  # arrived as one literal argument
        assert not marker.exists()
        assert victim.is_dir()


async def test_non_server_specific_runs_locally(client: httpx.AsyncClient, make_key) -> None:
    key = await make_key("write")
    pid = (await _ids(client, key))["test-local-echo"]
    queued = await client.post(
        f"/api/playbooks/{pid}/run",
        json={"params": {"word": "$(id)", "count": "3"}},
        headers=auth(key),
    )
    run = await _wait(client, key, queued.json()["run_id"])
    assert run["status"] == "succeeded" and run["steps"][0]["stdout"] == "$(id) 3\n"
    bad = await client.post(
        f"/api/playbooks/{pid}/run", json={"params": {"count": "three"}}, headers=auth(key)
    )
    assert bad.status_code == 400 and bad.json()["fields"][0]["field"] == "params.count"
