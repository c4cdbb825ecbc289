"""Oversized bodies on every write route of a real ``execflow serve``: 413 in the error shape,
with a Content-Length and chunked without one, and nothing half-written afterwards (every
table's row count unchanged). Positive controls: a body at the limit reaches the route (a 4xx
of its own, not 413) and a small body creates what it should.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from api.cli.secrets import import_all_tables
from models.db import Base, Database
from models.settings import get_settings
from tests.conftest import KeyFactory, auth
from tests.hardening.test_schemathesis import error_shape_problem

WRITE_METHODS = ("post", "put", "patch")


def write_routes(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(METHOD, path with every parameter set to 1) for each write operation."""
    routes = []
    for path, item in document["paths"].items():
        concrete = "/".join("1" if part.startswith("{") else part for part in path.split("/"))
        routes += [(m.upper(), concrete) for m in item if m in WRITE_METHODS]
    return routes


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"padding": "'
    sent = 13
    while sent < total:
        piece = min(size, total - sent)
        yield b"x" * piece
        sent += piece
    yield b'"}'


async def row_counts(database: Database) -> dict[str, int]:
    import_all_tables()
    async with database.session() as session:
        return {
            table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def _too_large_problem(response: httpx.Response) -> str | None:
    if response.status_code != 413:
        return f"status {response.status_code}: {response.text[:120]}"
    return error_shape_problem(response) or (
        None if response.json()["code"] == "PAYLOAD_TOO_LARGE" else response.json()["code"]
    )


async def test_every_write_route_refuses_oversized_bodies(
    served: tuple[str, Path], make_key: KeyFactory, database: Database
) -> None:
    base, _log = served
    limit = get_settings().max_body_bytes
    headers = {**auth(await make_key("admin")), "Content-Type": "application/json"}
    with httpx.Client(base_url=base, timeout=60) as client:
        routes = write_routes(client.get("/api/openapi.json").json())
        assert len(routes) >= 20, routes
        before = await row_counts(database)
        problems = []
        for method, path in routes:
            declared = client.request(method, path, content=b"x" * (limit + 1), headers=headers)
            if problem := _too_large_problem(declared):
                problems.append(f"{method} {path} (Content-Length): {problem}")
            chunked = client.request(method, path, content=chunks(limit + 1), headers=headers)
            if problem := _too_large_problem(chunked):
                problems.append(f"{method} {path} (chunked): {problem}")
        assert problems == [], "\n".join(problems)
        assert await row_counts(database) == before  # nothing half-written

        at_limit = client.post(
            "/api/sites", content=b"{" + b" " * (limit - 2) + b"}", headers=headers
        )
        assert at_limit.status_code == 400, at_limit.text  # reached the route: its own refusal
        small = client.post(
            "/api/sites",
            json={"name": "small-body", "url": "https://small.example/"},
            headers=headers,
        )
        assert small.status_code == 201, small.text
    assert (await row_counts(database))["sites"] == before["sites"] + 1
