"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api.routing import ADMIN_ONLY, PUBLIC, make_router

root_router = make_router(tags=["system"])
router = make_router(tags=["system"])


@root_router.get("/healthz", openapi_extra=PUBLIC, summary="Liveness: the process answers")
async def healthz() -> dict[str, object]:
    return {"success": True, "status": "ok"}


@root_router.get(
    "/readyz", openapi_extra=PUBLIC, summary="Readiness: database (and Redis when configured)"
)
async def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        async with request.app.state.database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    redis_url = request.app.state.settings.redis_url
    if redis_url:
        import redis.asyncio as redis

        client: Any = redis.from_url(redis_url)
        try:
            await client.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        finally:
            await client.aclose()
    ready = all(v == "ok" for v in checks.values())
    body = {"success": ready, "status": "ready" if ready else "not ready", "checks": checks}
    if not ready:
        body.update(message="Not ready", code="NOT_READY")
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", openapi_extra=ADMIN_ONLY, summary="Prometheus metrics (admin)")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
