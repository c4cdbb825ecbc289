"""Servers and execution through the API, on SQLite and PostgreSQL, against real sshd."""

from __future__ import annotations

import json
import uuid

import httpx

from models.ledger import entries_after
from tests.conftest import auth
from tests.executor.conftest import create_server, server_body
from tests.executor.sshd import Keys, SshdFarm, free_port
from tools import servers
from tools.executor import is_read_only_command


async def _ledger(action: str) -> list[dict]:
    return [e for e in await entries_after(0, limit=100_000) if e["action"] == action]


async def test_create_list_get_update_delete_never_returns_credentials(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    write, admin = await make_key("write"), await make_key("admin")
    body = server_body(sshd_farm, ssh_keys)
    created = await client.post("/api/servers", json=body, headers=auth(write))
    assert created.status_code == 201
    server = created.json()["server"]
    assert server["ip"] == "127.0.0.1" and server["status"] == "unknown"
    assert server["credential_kind"] == "private_key"
    for response in (
        created,
        await client.get("/api/servers", headers=auth(write)),
        await client.get(f"/api/servers/{server['id']}", headers=auth(write)),
    ):
        assert "PRIVATE KEY" not in response.text and 'private_key":' not in response.text
    listing = (await client.get("/api/servers", headers=auth(write))).json()
    assert listing["success"] is True
    assert {"id", "name", "ip", "status"} <= set(listing["servers"][0])
    patched = await client.patch(
        f"/api/servers/{server['id']}", json={"tags": ["web", "prod"]}, headers=auth(write)
    )
    assert patched.status_code == 200 and patched.json()["server"]["tags"] == ["web", "prod"]
    null = await client.patch(
        f"/api/servers/{server['id']}", json={"port": None}, headers=auth(write)
    )
    assert null.status_code == 400 and null.json()["fields"][0]["field"] == "port"
    dupe = await client.post(
        "/api/servers", json={**body, "name": body["name"]}, headers=auth(write)
    )
    assert dupe.status_code == 409
    assert (
        await client.delete(f"/api/servers/{server['id']}", headers=auth(write))
    ).status_code == 403
    assert (
        await client.delete(f"/api/servers/{server['id']}", headers=auth(admin))
    ).status_code == 200
    assert (
        await client.get(f"/api/servers/{server['id']}", headers=auth(admin))
    ).status_code == 404
    for entry in await entries_after(0, limit=100_000):
        assert "PRIVATE KEY" not in json.dumps(entry)


async def test_create_validation(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    key = await make_key("write")
    cases = {
        "host_key": server_body(sshd_farm, ssh_keys, host_key=None),
        "private_key": server_body(sshd_farm, ssh_keys, private_key="not a key"),
    }
    for field, body in cases.items():
        response = await client.post("/api/servers", json=body, headers=auth(key))
        assert response.status_code == 400, response.text
        assert response.json()["fields"][0]["field"] == field
    bad_key = server_body(sshd_farm, ssh_keys, host_key="garbage")
    assert (await client.post("/api/servers", json=bad_key, headers=auth(key))).status_code == 400
    tofu = server_body(sshd_farm, ssh_keys, host_key=None, trust_on_first_use=True)
    assert (await client.post("/api/servers", json=tofu, headers=auth(key))).status_code == 201
    local = {"name": f"local-{uuid.uuid4().hex[:6]}", "host": "localhost", "transport": "local"}
    assert (await client.post("/api/servers", json=local, headers=auth(key))).status_code == 201


async def test_execute_success_nonzero_and_ledger(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    ok = await client.post(
        f"/api/servers/{sid}/execute", json={"command": "echo hello"}, headers=auth(key)
    )
    assert ok.status_code == 200, ok.text
    data = ok.json()
    assert data["success"] and data["exit_code"] == 0 and data["stdout"] == "hello\n"
    bad = await client.post(
        f"/api/servers/{sid}/execute",
        json={"command": "echo nope >&2; exit 3", "timeout": 10},
        headers=auth(key),
    )
    assert bad.json()["exit_code"] == 3 and bad.json()["stderr"] == "nope\n"
    entries = [e for e in await _ledger("command_executed") if e["server_id"] == sid]
    assert [e["params"]["command"] for e in entries] == ["echo hello", "echo nope >&2; exit 3"]
    assert entries[0]["result"]["stdout_sha256"] == data["stdout_sha256"]
    assert entries[1]["result"]["exit_code"] == 3
    too_long = await client.post(
        f"/api/servers/{sid}/execute", json={"command": "true", "timeout": 301}, headers=auth(key)
    )
    assert too_long.status_code == 400


async def test_errors_have_codes_and_are_audited(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    key = await make_key("write")
    good = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    denied = await client.post(
        f"/api/servers/{good}/execute", json={"command": "rm -rf /"}, headers=auth(key)
    )
    assert denied.status_code == 403 and denied.json()["code"] == "POLICY_DENIED"
    timeout = await client.post(
        f"/api/servers/{good}/execute",
        json={"command": "sleep 30", "timeout": 1},
        headers=auth(key),
    )
    assert timeout.status_code == 504 and timeout.json()["code"] == "TIMEOUT"
    cases = {
        "UNREACHABLE": server_body(sshd_farm, ssh_keys, port=free_port()),
        "HOST_KEY_MISMATCH": server_body(sshd_farm, ssh_keys, host_key=ssh_keys.other_host_line),
        "AUTH_FAILED": server_body(sshd_farm, ssh_keys, private_key=ssh_keys.stranger_private),
    }
    for code, body in cases.items():
        sid = await create_server(client, key, body)
        response = await client.post(
            f"/api/servers/{sid}/execute", json={"command": "true"}, headers=auth(key)
        )
        assert response.status_code == 502 and response.json()["code"] == code, response.text
        [entry] = [e for e in await _ledger("command_executed") if e["server_id"] == sid]
        assert entry["result"]["code"] == code
    audited = {
        e["result"].get("code") for e in await _ledger("command_executed") if e["server_id"] == good
    }
    assert {"POLICY_DENIED", "TIMEOUT"} <= audited
    nameless = await create_server(client, key, server_body(sshd_farm, ssh_keys, username=None))
    response = await client.post(
        f"/api/servers/{nameless}/execute", json={"command": "true"}, headers=auth(key)
    )
    assert response.status_code == 409 and response.json()["code"] == "USERNAME_REQUIRED"
    missing = await client.post(
        "/api/servers/999999/execute", json={"command": "true"}, headers=auth(key)
    )
    assert missing.status_code == 404


async def test_trust_on_first_use_pins_the_key(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    key = await make_key("write")
    sid = await create_server(
        client, key, server_body(sshd_farm, ssh_keys, host_key=None, trust_on_first_use=True)
    )
    response = await client.post(
        f"/api/servers/{sid}/execute", json={"command": "true"}, headers=auth(key)
    )
    assert response.status_code == 200
    server = (await client.get(f"/api/servers/{sid}", headers=auth(key))).json()["server"]
    assert server["host_key"] == ssh_keys.host_key_line
    # pinned now: pointing the server at a host with another key is refused
    await client.patch(
        f"/api/servers/{sid}", json={"host_key": ssh_keys.other_host_line}, headers=auth(key)
    )
    again = await client.post(
        f"/api/servers/{sid}/execute", json={"command": "true"}, headers=auth(key)
    )
    assert again.json()["code"] == "HOST_KEY_MISMATCH"


async def test_streaming_execution(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    events = []
    async with client.stream(
        "POST",
        f"/api/servers/{sid}/execute/stream",
        json={"command": "echo one; sleep 0.2; echo two >&2; echo three"},
        headers=auth(key),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    assert [d for k, d in events if k == "stdout"] == ["one", "three"]
    assert [d for k, d in events if k == "stderr"] == ["two"]
    kind, result = events[-1]
    assert kind == "result" and result["exit_code"] == 0
    denied = await client.post(
        f"/api/servers/{sid}/execute/stream", json={"command": "reboot"}, headers=auth(key)
    )
    assert denied.status_code == 403


async def test_fanout_by_ids_and_tag(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    key = await make_key("write")
    tag = f"fan-{uuid.uuid4().hex[:6]}"
    ids = [
        await create_server(client, key, server_body(sshd_farm, ssh_keys, i, tags=[tag]))
        for i in range(len(sshd_farm.instances))
    ]
    down = await create_server(client, key, server_body(sshd_farm, ssh_keys, port=free_port()))
    by_tag = await client.post(
        "/api/servers/execute", json={"command": "uptime", "tag": tag}, headers=auth(key)
    )
    assert by_tag.status_code == 200, by_tag.text
    data = by_tag.json()
    assert data["succeeded"] == len(ids) and data["failed"] == 0
    assert sorted(r["server_id"] for r in data["results"]) == ids
    mixed = await client.post(
        "/api/servers/execute",
        json={"command": "hostname", "server_ids": [ids[0], down], "concurrency": 2},
        headers=auth(key),
    )
    results = {r["server_id"]: r for r in mixed.json()["results"]}
    assert results[ids[0]]["ok"] and results[down]["error"]["code"] == "UNREACHABLE"
    denied = await client.post(
        "/api/servers/execute",
        json={"command": "mkfs.ext4 /dev/sdz", "tag": tag},
        headers=auth(key),
    )
    assert denied.status_code == 403
    assert (
        await client.post("/api/servers/execute", json={"command": "true"}, headers=auth(key))
    ).status_code == 400


async def test_probe_gathers_facts(
    client: httpx.AsyncClient, make_key, sshd_farm: SshdFarm, ssh_keys: Keys, database
) -> None:
    key = await make_key("write")
    sid = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    status = await client.get(f"/api/servers/{sid}/status?refresh=true", headers=auth(key))
    assert status.status_code == 200, status.text
    data = status.json()
    assert data["status"] == "online" and data["last_seen"]
    assert data["facts"]["kernel"].startswith("Linux")
    assert {"load", "memory", "disk_root", "uptime_seconds"} <= set(data["facts"])
    down = await create_server(client, key, server_body(sshd_farm, ssh_keys, port=free_port()))
    offline = (
        await client.get(f"/api/servers/{down}/status?refresh=true", headers=auth(key))
    ).json()
    assert offline["status"] == "offline" and offline["probe_error"]["code"] == "UNREACHABLE"

    # the agents' catalog functions return JSON-able dicts
    async with database.session() as session:
        json.dumps(await servers.list_servers(session))
        json.dumps(await servers.get_server_status(session, server_id=sid))
        assert is_read_only_command("uptime") and not is_read_only_command("reboot")
