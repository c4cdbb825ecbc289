"""Every route in the OpenAPI document x {no key, malformed, revoked, read, write, admin}.

Generated from the served document, so a new route is covered without editing this test. A
route's required scope is its ``x-scope``; streaming routes (``x-stream``) are checked for
refusals only, since an admitted request would stay open.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import auth

RANK = {"read": 0, "write": 1, "admin": 2}
MISSING_ID = "999999"


async def _operations(client: httpx.AsyncClient) -> list[tuple[str, str, dict]]:
    document = (await client.get("/api/openapi.json")).json()
    ops = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                ops.append((method.upper(), path, op))
    assert ops, "the OpenAPI document lists no operations"
    return ops


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", MISSING_ID, path)


async def _call(client: httpx.AsyncClient, method: str, path: str, headers: dict) -> httpx.Response:
    body = {} if method in {"POST", "PUT", "PATCH"} else None
    return await client.request(method, _concrete(path), headers=headers, json=body)


async def test_every_route_enforces_its_scope(client: httpx.AsyncClient, make_key) -> None:
    keys = {scope: await make_key(scope) for scope in RANK}
    revoked = await make_key("admin", name="to revoke")
    listing = (await client.get("/api/keys", headers=auth(keys["admin"]))).json()["keys"]
    revoked_id = next(
        k["id"] for k in listing if revoked.endswith(k["last4"]) and k["name"] == "to revoke"
    )
    assert (
        await client.delete(f"/api/keys/{revoked_id}", headers=auth(keys["admin"]))
    ).status_code == 200

    refusals = {
        "no key": {},
        "malformed": auth("ef_admin_notavalidkey"),
        "bad checksum": auth(keys["admin"][:-1] + ("A" if keys["admin"][-1] != "A" else "B")),
        "revoked": auth(revoked),
        "wrong scheme": {"Authorization": f"Basic {keys['admin']}"},
    }
    failures = []
    for method, path, op in await _operations(client):
        scope = op.get("x-scope")
        assert scope in {"public", "read", "write", "admin"}, f"{method} {path} has no x-scope"
        if scope == "public":
            continue
        for label, headers in refusals.items():
            response = await _call(client, method, path, headers)
            if response.status_code != 401 or response.headers.get("www-authenticate") != "Bearer":
                failures.append(f"{method} {path} [{label}] -> {response.status_code}")
        for key_scope, key in keys.items():
            allowed = RANK[key_scope] >= RANK[scope]
            if not allowed:
                response = await _call(client, method, path, auth(key))
                if response.status_code != 403:
                    failures.append(f"{method} {path} [{key_scope}] -> {response.status_code}")
            elif not op.get("x-stream"):
                response = await _call(client, method, path, auth(key))
                if response.status_code in {401, 403} or response.status_code >= 500:
                    failures.append(f"{method} {path} [{key_scope}] -> {response.status_code}")
    assert not failures, "\n".join(failures)


async def test_method_scopes_follow_the_reference(client: httpx.AsyncClient) -> None:
    """read = GET only; write adds POST/PUT/PATCH; DELETE is admin."""
    for method, path, op in await _operations(client):
        scope = op["x-scope"]
        if method == "DELETE":
            assert scope == "admin", f"{method} {path}"
        elif method in {"POST", "PUT", "PATCH"}:
            assert scope in {"write", "admin"}, f"{method} {path}"


async def test_public_health_routes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"success": True, "status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"


@pytest.mark.parametrize("prefix", ["/api", "/api/v1"])
async def test_both_prefixes_serve_every_route(
    client: httpx.AsyncClient, make_key, prefix: str
) -> None:
    key = await make_key("admin")
    for method, path, op in await _operations(client):
        if method != "GET" or "{" in path or op.get("x-stream") or not path.startswith("/api/"):
            continue
        response = await client.get(prefix + path.removeprefix("/api"), headers=auth(key))
        assert response.status_code == 200, f"{prefix}{path} -> {response.status_code}"
        assert response.headers.get("content-type", "").startswith(
            ("application/json", "text/plain")
        )
