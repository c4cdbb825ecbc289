"""GET /api/audit-log and its proofs, checkpoint and export, checked with only the RFCs."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest
import rfc8785

from models import ledger
from models.ledger.verify import (
    key_id,
    verify_checkpoint,
    verify_consistency,
    verify_export,
    verify_inclusion,
)
from tests.conftest import auth


@pytest.fixture(scope="module")
async def seeded(database) -> dict[str, int]:
    """A few entries with distinct actions and servers (module-wide; others may add more)."""
    seqs = {}
    for i in range(6):
        seqs[f"cmd{i}"] = await ledger.record(
            "command_executed",
            actor="key:1",
            server_id=700 + i % 2,
            params={"command": f"echo {i}", "password": "hunter2"},
            result={"exit_code": 0},
            request_id=f"req-{i}",
        )
    seqs["pb"] = await ledger.record("playbook_run", actor="key:2", server_id=701)
    return seqs


async def test_list_newest_first_with_checkpoint(client: httpx.AsyncClient, make_key, seeded):
    key = await make_key("read")
    body = (await client.get("/api/audit-log", headers=auth(key))).json()
    assert body["success"] is True and body["limit"] == 50 and body["offset"] == 0
    seqs = [e["seq"] for e in body["entries"]]
    assert seqs == sorted(seqs, reverse=True) and body["total"] >= 7
    checkpoint = body["checkpoint"]
    name, public = (
        checkpoint["verifier_key"].split("+")[0],
        base64.b64decode(checkpoint["public_key"]),
    )
    assert verify_checkpoint(checkpoint["checkpoint"], name, public).tree_size <= body["total"]
    assert "hunter2" not in str(body)


async def test_filters_and_pagination(client: httpx.AsyncClient, make_key, seeded):
    key = await make_key("read")
    get = lambda **q: client.get("/api/audit-log", headers=auth(key), params=q)  # noqa: E731
    played = (await get(action="playbook_run")).json()
    assert played["total"] == 1 and played["entries"][0]["seq"] == seeded["pb"]
    on_700 = (await get(server_id=700, action="command_executed")).json()
    assert on_700["total"] == 3 and {e["server_id"] for e in on_700["entries"]} == {700}
    page = (await get(action="command_executed", limit=2, offset=1)).json()
    assert [e["seq"] for e in page["entries"]] == [seeded["cmd4"], seeded["cmd3"]]
    assert page["total"] == 6
    entry_ts = page["entries"][0]["ts"]
    later = (await get(action="command_executed", **{"from": entry_ts})).json()
    assert all(e["ts"] >= entry_ts for e in later["entries"]) and later["total"] >= 2
    none = (await get(to="2000-01-01")).json()
    assert none["total"] == 0 and none["entries"] == []
    assert (await get(**{"from": "2000-01-01T00:00:00Z", "action": "playbook_run"})).json()[
        "total"
    ] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 201},
        {"limit": "x"},
        {"offset": -1},
        {"from": "yesterday"},
        {"to": "2026-13-45"},
        {"from": "2026-02-01", "to": "2026-01-01"},
    ],
)
async def test_bad_queries_are_400(client: httpx.AsyncClient, make_key, params):
    key = await make_key("read")
    response = await client.get("/api/audit-log", headers=auth(key), params=params)
    assert response.status_code == 400, response.text
    assert response.json()["success"] is False


async def test_requires_a_key(client: httpx.AsyncClient):
    for path in ("/api/audit-log", "/api/audit-log/checkpoint", "/api/audit-log/0"):
        assert (await client.get(path)).status_code == 401


async def test_entry_with_inclusion_proof(client: httpx.AsyncClient, make_key, seeded):
    key = await make_key("read")
    checkpoint = (await client.get("/api/audit-log/checkpoint", headers=auth(key))).json()
    size = checkpoint["tree_size"]
    seq = seeded["cmd2"]
    body = (await client.get(f"/api/audit-log/{seq}", headers=auth(key))).json()
    entry = body["entry"]
    assert entry["seq"] == seq and entry["params"]["password"] == "[REDACTED]"
    leaf = hashlib.sha256(b"\x00" + rfc8785.dumps(entry)).digest()  # only the RFCs
    assert body["leaf_hash"] == leaf.hex()
    proof = [bytes.fromhex(p) for p in body["inclusion_proof"]]
    assert verify_inclusion(seq, body["tree_size"], leaf, proof, bytes.fromhex(body["root_hash"]))
    # against the signed checkpoint's tree
    pinned = (
        await client.get(f"/api/audit-log/{seq}", headers=auth(key), params={"tree_size": size})
    ).json()
    signed = verify_checkpoint(
        checkpoint["checkpoint"],
        checkpoint["verifier_key"].split("+")[0],
        base64.b64decode(checkpoint["public_key"]),
    )
    assert signed.tree_size == size and signed.root_hash.hex() == pinned["root_hash"]
    assert verify_inclusion(
        seq, size, leaf, [bytes.fromhex(p) for p in pinned["inclusion_proof"]], signed.root_hash
    )
    name = checkpoint["verifier_key"].split("+")[0]
    assert (
        checkpoint["verifier_key"].split("+")[1]
        == key_id(name, base64.b64decode(checkpoint["public_key"])).hex()
    )


async def test_entry_errors(client: httpx.AsyncClient, make_key, seeded):
    key = await make_key("read")
    assert (await client.get("/api/audit-log/999999", headers=auth(key))).status_code == 404
    assert (await client.get("/api/audit-log/-1", headers=auth(key))).status_code == 400
    too_big = await client.get(
        f"/api/audit-log/{seeded['pb']}", headers=auth(key), params={"tree_size": 10**9}
    )
    assert too_big.status_code == 400
    outside = await client.get(
        f"/api/audit-log/{seeded['pb']}", headers=auth(key), params={"tree_size": seeded["pb"]}
    )
    assert outside.status_code == 400


async def test_consistency_proof(client: httpx.AsyncClient, make_key, seeded):
    key = await make_key("read")
    old = (await client.get("/api/audit-log/checkpoint", headers=auth(key))).json()
    await ledger.record("approval_decided", actor="system", params={"approved": True})
    new = (await client.get("/api/audit-log/checkpoint", headers=auth(key))).json()
    assert new["tree_size"] > old["tree_size"]
    body = (
        await client.get(
            "/api/audit-log/consistency",
            headers=auth(key),
            params={"from_size": old["tree_size"], "to_size": new["tree_size"]},
        )
    ).json()
    assert body["from_root"] == old["root_hash"] and body["to_root"] == new["root_hash"]
    assert verify_consistency(
        old["tree_size"],
        new["tree_size"],
        bytes.fromhex(old["root_hash"]),
        bytes.fromhex(new["root_hash"]),
        [bytes.fromhex(p) for p in body["consistency_proof"]],
    )
    default = (await client.get("/api/audit-log/consistency", headers=auth(key))).json()
    assert default["to_size"] >= new["tree_size"] and default["from_size"] <= default["to_size"]
    empty = (
        await client.get("/api/audit-log/consistency", headers=auth(key), params={"from_size": 0})
    ).json()
    assert empty["consistency_proof"] == [] and empty["from_root"] == hashlib.sha256().hexdigest()
    for params in ({"from_size": -1}, {"from_size": 10**9}, {"from_size": 2, "to_size": 1}):
        response = await client.get("/api/audit-log/consistency", headers=auth(key), params=params)
        assert response.status_code == 400, (params, response.text)


async def test_export_verifies_offline(client: httpx.AsyncClient, make_key, seeded, tmp_path):
    key = await make_key("read")
    response = await client.get("/api/audit-log/export", headers=auth(key))
    assert response.status_code == 200
    path = tmp_path / "audit.jsonl"
    path.write_bytes(response.content)
    report = verify_export(path)
    assert report.ok and report.tree_size >= 7 and report.checkpoints >= 1, report


async def test_key_management_is_recorded(client: httpx.AsyncClient, make_key):
    admin = await make_key("admin")
    created = await client.post(
        "/api/keys", headers=auth(admin), json={"name": "audited", "scope": "read"}
    )
    key_id_ = created.json()["api_key"]["id"]
    await client.delete(f"/api/keys/{key_id_}", headers=auth(admin))
    entries = (
        await client.get("/api/audit-log", headers=auth(admin), params={"limit": 200})
    ).json()["entries"]
    actions = {(e["action"], e["target"]) for e in entries}
    assert ("api_key_created", f"key:{key_id_}") in actions
    assert ("api_key_revoked", f"key:{key_id_}") in actions
    assert created.json()["key"] not in str(entries)
