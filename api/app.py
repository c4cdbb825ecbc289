"""The FastAPI application factory.

Domain routers live in ``api/routers/``, one module per domain, each exposing ``router`` (made
with ``api.routing.make_router``) and optionally ``lifespan(app)``, an async context manager for
background services the domain runs while the API is up. They are discovered, not listed, so a
new domain is one new file. Each router is served under ``/api`` and ``/api/v1``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

import api.routers
from api.errors import install_error_handlers
from api.middleware import RequestContextMiddleware
from api.ratelimit import MemoryLimiter, RedisLimiter
from api.security import KeyCache
from models.db import Database, init_database
from models.settings import Settings, get_settings

API_PREFIXES = ("/api", "/api/v1")


def router_modules() -> list[ModuleType]:
    """Every module in ``api.routers`` that defines a ``router`` or ``root_router``, by name."""
    found = []
    for info in sorted(pkgutil.iter_modules(api.routers.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"api.routers.{info.name}")
        if hasattr(module, "router") or hasattr(module, "root_router"):
            found.append(module)
    return found


def _openapi_without_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI documents validation errors as 422; ExecFlow answers 400, as the reference says."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(
    settings: Settings | None = None, *, database: Database | None = None, run_workers: bool = True
) -> FastAPI:
    """Build the API. ``run_workers`` starts the in-process job workers with the app."""
    settings = settings or get_settings()
    modules = router_modules()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = database or init_database(settings.db_url)
        app.state.database = db
        app.state.limiter = (
            RedisLimiter(settings.redis_url, settings.redis_prefix)
            if settings.redis_url
            else MemoryLimiter()
        )
        async with AsyncExitStack() as stack:
            if run_workers and settings.queue_backend == "inprocess":
                from orchestrator.queue import InProcessQueue

                queue = InProcessQueue(concurrency=settings.worker_concurrency)
                await queue.start()
                stack.push_async_callback(queue.stop)
                app.state.queue = queue
            for module in modules:
                if hasattr(module, "lifespan"):
                    await stack.enter_async_context(module.lifespan(app))
            yield
        await app.state.limiter.close()
        if database is None:
            await db.dispose()

    app = FastAPI(
        title="ExecFlow API",
        version="1.0.0",
        description=(
            "AI agent orchestration for operations and security teams. Authenticate with "
            "`Authorization: Bearer ef_<scope>_...`. Each operation's required scope is in "
            "its `x-scope` field. Every route is also served under `/api/v1`."
        ),
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.openapi = lambda: _openapi_without_422(app)  # type: ignore[method-assign]
    app.state.settings = settings
    app.state.key_cache = KeyCache(settings.auth_cache_seconds)
    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Last-Event-ID"],
        expose_headers=[
            "X-Request-ID",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
        ],
        max_age=600,
    )
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    for module in modules:
        for prefix in API_PREFIXES if hasattr(module, "router") else ():
            app.include_router(module.router, prefix=prefix, include_in_schema=prefix == "/api")
        if hasattr(module, "root_router"):
            app.include_router(module.root_router)
    return app
