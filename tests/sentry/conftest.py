"""Real loopback upstreams (plain, flapping, TLS near expiry, changing content) and a fake clock."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

# The background scheduler would probe test sites on the real clock; tests drive probes
# themselves with a fake clock (tests/conftest.py turns it off; test_scheduler.py starts it).
os.environ.setdefault("EXECFLOW_SENTRY_SCHEDULER", "off")  # for `execflow serve` subprocesses

from models.db import Database
from models.sites import Site
from tests.support.pki import Pki, make_pki
from tools.sentry.scheduler import make_client

SECURE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=63072000",
}


@dataclass
class Upstream:
    """A loopback HTTP(S) server whose answers the test scripts."""

    url: str
    status: int = 200
    body: str = "<html><h1>Welcome to ExampleCorp</h1></html>"
    headers: dict[str, str] = field(default_factory=dict)
    script: deque[int] = field(default_factory=deque)  # statuses served before ``status``
    hits: int = 0

    def answer(self) -> tuple[int, str, dict[str, str]]:
        self.hits += 1
        status = self.script.popleft() if self.script else self.status
        return status, self.body, self.headers


def _serve(upstream_factory: Callable[[str], Upstream], context: ssl.SSLContext | None):
    holder: dict[str, Upstream] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body, headers = holder["u"].answer()
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if context else "http"
    host = "localhost" if context else "127.0.0.1"
    holder["u"] = upstream_factory(f"{scheme}://{host}:{server.server_address[1]}/")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, holder["u"]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server, up = _serve(lambda url: Upstream(url=url), None)
    yield up
    server.shutdown()
    server.server_close()


@pytest.fixture
def tls_upstream(tmp_path: Path) -> Iterator[tuple[Upstream, Pki]]:
    """An HTTPS upstream whose certificate expires in two days."""
    pki = make_pki(tmp_path, days_left=2)
    server, up = _serve(
        lambda url: Upstream(url=url, headers=dict(SECURE_HEADERS)), pki.server_context
    )
    yield up, pki
    server.shutdown()
    server.server_close()


class FakeClock:
    """An injectable clock: tests move time instead of waiting for it."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.current = start or dt.datetime.now(dt.UTC).replace(microsecond=0)

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, seconds: float) -> dt.datetime:
        self.current += dt.timedelta(seconds=seconds)
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def probe_client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c


SiteFactory = Callable[..., Coroutine[Any, Any, int]]
_counter = iter(range(1, 1_000_000))


@pytest.fixture
def make_site(database: Database) -> SiteFactory:
    """Create a Site row directly (the /api/sites routes belong to the traffic module)."""

    async def make(url: str, **sentry_meta: Any) -> int:
        async with database.session() as session:
            site = Site(
                name=f"site-{os.getpid()}-{next(_counter)}",
                url=url,
                allowlist=[],
                shield_mode=False,
                meta={"sentry": sentry_meta} if sentry_meta else {},
            )
            session.add(site)
            await session.flush()
            return site.id

    return make
