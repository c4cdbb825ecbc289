"""Event streams tell a reverse proxy not to buffer them, whatever route produced them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse

from api.middleware import RequestContextMiddleware


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware, max_body_bytes=1024)

    async def events() -> AsyncIterator[bytes]:
        yield b"data: one\n\n"

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/declared")
    async def declared() -> StreamingResponse:
        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
        )

    @app.get("/plain")
    async def plain() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


async def test_event_streams_carry_x_accel_buffering_no_once() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        stream = await c.get("/stream")
        assert stream.headers["x-accel-buffering"] == "no"
        declared = await c.get("/declared")
        assert declared.headers.get_list("x-accel-buffering") == ["no"]
        plain = await c.get("/plain")
        assert "x-accel-buffering" not in plain.headers
