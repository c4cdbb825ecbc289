"""Shared fixtures: real SQLite and PostgreSQL databases, real Redis, the app over ASGI.

Every test that touches the database runs on both backends: ``backend`` is parametrized over
``sqlite`` and ``postgres``, and each test module gets a fresh, migrated database of each kind
(PostgreSQL: a new database on the server at ``EXECFLOW_TEST_POSTGRES``, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")

from api.app import create_app
from api.keys import create_api_key
from models import migrate
from models.db import Database, init_database
from models.settings import Settings, configure

PG_ADMIN_URL = os.environ.get(
    "EXECFLOW_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("EXECFLOW_TEST_REDIS", "redis://127.0.0.1:6379/0")
BACKENDS = ("sqlite", "postgres")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(
    backend: str, tmp_path: Path
) -> tuple[str, Callable[[], Coroutine[Any, Any, None]]]:
    """A fresh, migrated database URL of ``backend`` and a coroutine function that drops it."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / f'execflow-{uuid.uuid4().hex[:8]}.db'}"

        async def drop() -> None:
            return None

    else:
        name = f"ef_test_{uuid.uuid4().hex[:12]}"
        await _pg_admin(f'CREATE DATABASE "{name}"')
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

        async def drop() -> None:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    await asyncio.to_thread(migrate.upgrade, url)
    return url, drop


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
async def database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    url, drop = await create_database(backend, tmp_path_factory.mktemp(backend))
    yield url
    await drop()


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("data")
    # Background probing of sites would race the tests that drive probes with a fake clock.
    s = Settings(
        data_dir=data_dir, database_url=database_url, log_format="text", sentry_scheduler=False
    )
    configure(s)
    return s


@pytest.fixture(scope="module")
async def database(settings: Settings) -> AsyncIterator[Database]:
    db = init_database(settings.db_url)
    yield db
    await db.dispose()


@pytest.fixture(scope="module")
async def app(settings: Settings, database: Database) -> AsyncIterator[Any]:
    application = create_app(settings, database=database)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="module")
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


KeyFactory = Callable[..., Coroutine[Any, Any, str]]


@pytest.fixture(scope="module")
def make_key(database: Database) -> KeyFactory:
    """Create a key directly through the service; enterprise with no burst cap unless told."""

    async def make(
        scope: str = "admin",
        *,
        plan: str = "enterprise",
        rate_per_minute: int | None = 100_000,
        burst: int | None = None,
        name: str = "test",
    ) -> str:
        async with database.session() as session:
            _, key = await create_api_key(
                session,
                name=name,
                scope=scope,
                plan=plan,
                rate_per_minute=rate_per_minute if plan == "enterprise" else None,
                burst=burst if plan == "enterprise" else None,
                actor="test",
            )
        return key

    return make


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    return f"eftest{uuid.uuid4().hex[:10]}"
