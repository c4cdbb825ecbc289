"""API keys: shown once, stored as hashes, listed without secrets, revoked at once."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from api.keys import generate_key, hash_key, is_well_formed
from models.keys import ApiKey
from tests.conftest import auth
from tests.support.processes import run_cli


def test_key_format_and_checksum() -> None:
    for scope in ("read", "write", "admin"):
        key = generate_key(scope)
        assert key.startswith(f"ef_{scope}_") and is_well_formed(key)
        assert not is_well_formed(key[:-1])  # truncated
        flipped = key[:20] + ("a" if key[20] != "a" else "b") + key[21:]
        assert not is_well_formed(flipped)  # one mistyped character
    assert not is_well_formed("ef_root_" + "a" * 38)


async def test_create_list_revoke(client: httpx.AsyncClient, make_key, database) -> None:
    admin = await make_key("admin")
    created = await client.post(
        "/api/keys", headers=auth(admin), json={"name": "ci", "scope": "write", "plan": "pro"}
    )
    assert created.status_code == 201
    body = created.json()
    key, meta = body["key"], body["api_key"]
    assert body["success"] is True and key.startswith("ef_write_")
    assert meta["prefix"] == key[:13] and meta["last4"] == key[-4:]

    async with database.session() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.id == meta["id"]))).scalar_one()
        assert row.key_hash == hash_key(key) and key not in str(row.__dict__)

    listing = await client.get("/api/keys", headers=auth(admin))
    assert key not in listing.text
    listed = next(k for k in listing.json()["keys"] if k["id"] == meta["id"])
    assert listed["scope"] == "write" and listed["plan"] == "pro"

    assert (await client.get("/api/servers", headers=auth(key))).status_code == 200
    assert (await client.delete(f"/api/keys/{meta['id']}", headers=auth(admin))).status_code == 200
    refused = await client.get("/api/servers", headers=auth(key))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"


async def test_scope_comes_from_the_database_not_the_prefix(
    client: httpx.AsyncClient, make_key, database
) -> None:
    key = await make_key("read")
    async with database.session() as session:
        row = (
            await session.execute(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
        ).scalar_one()
        row.scope = "admin"
    app_cache = client._transport.app.state.key_cache  # type: ignore[attr-defined]
    app_cache.forget(row.id)
    assert (await client.get("/api/keys", headers=auth(key))).status_code == 200


async def test_enterprise_only_custom_limits(client: httpx.AsyncClient, make_key) -> None:
    admin = await make_key("admin")
    response = await client.post(
        "/api/keys", headers=auth(admin), json={"name": "x", "scope": "read", "rate_per_minute": 5}
    )
    assert response.status_code == 400 and response.json()["fields"] == [
        {"field": "rate_per_minute"}
    ]


async def test_last_admin_key_cannot_be_revoked(client: httpx.AsyncClient, make_key) -> None:
    admin = await make_key("admin")
    listing = (await client.get("/api/keys", headers=auth(admin))).json()["keys"]
    for k in listing:
        if k["scope"] == "admin" and k["revoked_at"] is None and not admin.endswith(k["last4"]):
            await client.delete(f"/api/keys/{k['id']}", headers=auth(admin))
    own = next(
        k
        for k in (await client.get("/api/keys", headers=auth(admin))).json()["keys"]
        if k["revoked_at"] is None and k["scope"] == "admin"
    )
    response = await client.delete(f"/api/keys/{own['id']}", headers=auth(admin))
    assert response.status_code == 409 and response.json()["code"] == "CONFLICT"


def test_cli_creates_a_key_once_and_lists_without_it(database_url: str, tmp_path) -> None:
    env = {"EXECFLOW_DATA_DIR": str(tmp_path), "EXECFLOW_DATABASE_URL": database_url}
    created = run_cli(
        "keys", "create", "--scope", "admin", "--plan", "pro", "--name", "ops", env=env
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert is_well_formed(key) and key.startswith("ef_admin_")
    listed = run_cli("keys", "list", env=env)
    assert listed.returncode == 0 and "ops" in listed.stdout and key not in listed.stdout


def test_invalid_settings_fail_naming_the_field(tmp_path) -> None:
    result = run_cli(
        "serve", env={"EXECFLOW_DATA_DIR": str(tmp_path), "EXECFLOW_PORT": "not-a-port"}
    )
    assert result.returncode == 2 and "EXECFLOW_PORT" in result.stderr
    result = run_cli("db", "upgrade", env={"EXECFLOW_DATABASE_URL": "mysql://x/y"})
    assert result.returncode == 2 and "EXECFLOW_DATABASE_URL" in result.stderr
