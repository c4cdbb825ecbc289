"""Fixtures for the SSRF suite: a loopback HTTP server and allow-list settings."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import models.settings as settings_module
from models.settings import Settings, configure


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
    hits: list[str] = []

    def _serve(self) -> None:
        type(self).hits.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            payload = b"ok " + self.command.encode() + b" " + self.body
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        route(self)

    do_GET = do_POST = do_HEAD = _serve

    def log_message(self, *args: object) -> None:
        return None


class LoopbackServer:
    """A threaded HTTP(S) server on a loopback address; ``routes`` script its answers."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        handler = type("Handler", (_Handler,), {"routes": {}, "hits": []})
        self.handler = handler
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.base = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def routes(self) -> dict[str, Callable[[BaseHTTPRequestHandler], None]]:
        return self.handler.routes

    @property
    def hits(self) -> list[str]:
        return self.handler.hits

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture
def allowlist(tmp_path: Path) -> Iterator[Callable[[list[str]], None]]:
    """Configure ``outbound_allowlist`` for one test; the previous settings come back after."""
    previous = settings_module._current

    def set_list(entries: list[str]) -> None:
        configure(Settings(data_dir=tmp_path, outbound_allowlist=entries))

    set_list([])
    yield set_list
    configure(previous)


def redirect_to(location: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def slow(seconds: float) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(seconds)
        handler.send_response(200)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def big(size: int) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()  # no Content-Length: the reader must count
        handler.wfile.write(b"x" * size)
        handler.close_connection = True

    return route
