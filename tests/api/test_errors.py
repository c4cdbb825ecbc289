"""Every error status renders {"success": false, "message", "code"} with no stack trace."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from api.app import create_app
from api.routing import make_router
from tests.conftest import auth


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["code"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in response.text
    assert response.headers.get("x-request-id")
    return body


async def test_unknown_route_404(client: httpx.AsyncClient, make_key) -> None:
    assert_error(
        await client.get("/api/no-such-thing", headers=auth(await make_key())), 404, "NOT_FOUND"
    )
    assert_error(await client.get("/nowhere"), 404, "NOT_FOUND")


async def test_wrong_method_405(client: httpx.AsyncClient, make_key) -> None:
    assert_error(await client.put("/healthz"), 405, "METHOD_NOT_ALLOWED")


async def test_missing_and_invalid_parameters_400_list_fields(
    client: httpx.AsyncClient, make_key
) -> None:
    key = await make_key("admin")
    body = assert_error(
        await client.post("/api/keys", headers=auth(key), json={}), 400, "VALIDATION_ERROR"
    )
    assert {f["field"] for f in body["fields"]} == {"name", "scope"}
    body = assert_error(
        await client.post("/api/keys", headers=auth(key), json={"name": "x", "scope": "root"}),
        400,
        "VALIDATION_ERROR",
    )
    assert [f["field"] for f in body["fields"]] == ["scope"]
    body = assert_error(
        await client.get("/api/servers/abc", headers=auth(key)), 400, "VALIDATION_ERROR"
    )
    assert body["fields"][0]["field"] == "server_id"
    malformed = await client.post(
        "/api/keys", headers={**auth(key), "content-type": "application/json"}, content=b"{not json"
    )
    assert_error(malformed, 400, "VALIDATION_ERROR")


async def test_nul_characters_are_400_everywhere(client: httpx.AsyncClient, make_key) -> None:
    """PostgreSQL cannot store NUL in text: both backends refuse it up front (it was a 500 on
    PostgreSQL from any text field, found by the schemathesis suite)."""
    h = auth(await make_key("admin"))
    for response in (
        await client.get("/api/audit-log", params={"action": "a\x00b"}, headers=h),
        await client.get("/api/compact/cmp%00x", headers=h),
        await client.post(
            "/api/eshield/quarantine", json={"target": "10.99.0.1", "reason": "a\x00"}, headers=h
        ),
        await client.post("/api/agents/task", json={"task": "check\x00 disk"}, headers=h),
    ):
        assert_error(response, 400, "VALIDATION_ERROR")
    # An escaped backslash before "u0000" is ordinary text, not a NUL: accepted as written.
    literal = "prints \\u0000 literally"
    ok = await client.post(
        "/api/eshield/quarantine", json={"target": "10.99.0.2", "reason": literal}, headers=h
    )
    assert ok.status_code == 201, ok.text
    assert ok.json()["quarantine"]["reason"] == literal


async def test_401_and_403(client: httpx.AsyncClient, make_key) -> None:
    response = await client.get("/api/servers")
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == "Bearer"
    read = await make_key("read")
    assert_error(await client.post("/api/keys", headers=auth(read), json={}), 403, "FORBIDDEN")


async def test_404_resource(client: httpx.AsyncClient, make_key) -> None:
    assert_error(
        await client.get("/api/servers/424242", headers=auth(await make_key("read"))),
        404,
        "NOT_FOUND",
    )


async def test_413_body_too_large(client: httpx.AsyncClient, make_key, settings) -> None:
    key = await make_key("admin")
    big = b"x" * (settings.max_body_bytes + 1)
    response = await client.post(
        "/api/keys", headers={**auth(key), "content-type": "application/json"}, content=big
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")

    async def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    response = await client.post(
        "/api/keys", headers={**auth(key), "content-type": "application/json"}, content=chunks()
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_429_shape(client: httpx.AsyncClient, make_key, app) -> None:
    from api.ratelimit import MemoryLimiter

    original, app.state.limiter = app.state.limiter, MemoryLimiter(lambda: 1_000_000.0)
    key = await make_key("read", rate_per_minute=60, burst=1)
    assert (await client.get("/api/servers", headers=auth(key))).status_code == 200
    response = await client.get("/api/servers", headers=auth(key))
    app.state.limiter = original
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["retry-after"]) == 1


async def test_500_is_rendered_without_trace(settings, database) -> None:
    app = create_app(settings, database=database, run_workers=False)
    boom = make_router()

    @boom.get("/boom", openapi_extra={"x-scope": "public"})
    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    app.include_router(boom, prefix="/api")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            response = await c.get("/api/boom")
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert (
        "secret internal detail" not in response.text and body["message"] == "Internal server error"
    )


ORIGIN = "https://fluxcybers.polsia.app"


@pytest.mark.parametrize("origin,allowed", [(ORIGIN, True), ("https://evil.example", False)])
async def test_cors(client: httpx.AsyncClient, make_key, origin: str, allowed: bool) -> None:
    preflight = await client.options(
        "/api/servers",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    if allowed:
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    else:
        assert preflight.status_code == 400
        assert "access-control-allow-origin" not in preflight.headers
    response = await client.get(
        "/api/servers", headers={**auth(await make_key("read")), "Origin": origin}
    )
    assert response.status_code == 200
    assert (response.headers.get("access-control-allow-origin") == origin) is allowed


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz", headers={"X-Request-ID": "abc-123"})).headers[
        "x-request-id"
    ] == "abc-123"
    generated = (await client.get("/healthz", headers={"X-Request-ID": "bad id\n"})).headers[
        "x-request-id"
    ]
    assert generated != "bad id\n" and len(generated) == 32


async def test_openapi_lists_error_responses(client: httpx.AsyncClient) -> None:
    document = (await client.get("/api/openapi.json")).json()
    op = document["paths"]["/api/servers"]["get"]
    assert {"400", "401", "403", "429"} <= set(op["responses"])
    assert not any(
        "422" in o.get("responses", {}) for i in document["paths"].values() for o in i.values()
    )
    assert op["x-scope"] == "read"
