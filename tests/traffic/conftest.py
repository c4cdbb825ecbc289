"""Traffic-plane fixtures: a real upstream HTTP server, real ``execflow shield`` processes, and
visitors with distinct loopback source addresses."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from models.settings import Settings
from tests.support.processes import ROOT, execflow_env, free_port, stop_process, wait_started
from tools.vaultshield.challenge import VERIFY_PATH, solve
from tools.vaultshield.proxy import READY_PATH


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "forwarded_for": self.headers.get("x-forwarded-for"),
                "user_agent": self.headers.get("user-agent"),
                "probe_pass": self.headers.get("x-execflow-probe"),
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_length": len(body),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """A real HTTP server on loopback that echoes what it received."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@contextmanager
def shield_process(
    settings: Settings, *, site_id: int, upstream: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run ``execflow shield`` for a site; yield its base URL."""
    port = free_port()
    base_env = {
        "EXECFLOW_DATABASE_URL": settings.db_url,
        "EXECFLOW_DATA_DIR": str(settings.data_dir),
        "EXECFLOW_LOG_FORMAT": "text",
        "EXECFLOW_VAULTSHIELD_POW_DIFFICULTY": "8",
        **(env or {}),
    }
    log_path = settings.data_dir / f"shield-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "shield",
                "--site-id",
                str(site_id),
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                upstream,
            ],
            env=execflow_env(base_env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_started(proc, base + READY_PATH, log_path)
            yield base
        finally:
            stop_process(proc)


@asynccontextmanager
async def visitor(base: str, ip: str, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose requests come from source address ``ip`` (127.0.0.0/8)."""
    transport = httpx.AsyncHTTPTransport(local_address=ip)
    async with httpx.AsyncClient(base_url=base, transport=transport, timeout=10, **kwargs) as c:
        yield c


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, interval: float = 0.05
) -> float:
    """Seconds until ``check()`` held; fails the test after ``timeout`` (bounded loop)."""
    start = time.monotonic()
    for _ in range(int(timeout / interval) + 1):
        if await check():
            return time.monotonic() - start
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def status_of(base: str, ip: str, path: str = "/", **headers: str) -> int:
    async with visitor(base, ip) as client:
        return (await client.get(path, headers=headers)).status_code


async def pass_challenge(client: httpx.AsyncClient, path: str = "/") -> httpx.Response:
    """Fetch ``path``, solve the proof of work like the page's script, post it back."""
    page = await client.get(path)
    assert page.status_code == 403 and page.headers["x-vaultshield"] == "challenge"
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    difficulty = int(token.group(1).split(".")[1])
    answer = solve(token.group(1), difficulty)
    return await client.post(
        VERIFY_PATH, data={"token": token.group(1), "answer": str(answer), "next": path}
    )
