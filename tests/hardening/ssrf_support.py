"""Loopback servers and redirect scripts shared by the SSRF suites of the outbound features.

ALLOWED (127.0.0.9) is the allow-listed positive control; FORBIDDEN (127.0.0.2) is live but not
allow-listed, so a request the guard let through would show up in its hits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from models.errors import BadRequest
from tests.codec.images import png_bytes, synthetic
from tests.ssrf.conftest import LoopbackServer, redirect_to
from tests.support.pki import make_pki
from tools import ssrf

ALLOWED, FORBIDDEN = "127.0.0.9", "127.0.0.2"
PNG = png_bytes(synthetic(16, 16))
FEED = b"198.51.100.77\n198.51.100.78\n"
NAMES = ("hooks.rebind.test", "asset.rebind.test", "feed.rebind.test")


def _serve_content(server: LoopbackServer) -> LoopbackServer:
    for path, body, kind in (("/asset.png", PNG, "image/png"), ("/feed.txt", FEED, "text/plain")):
        server.routes[path] = _static(body, kind)
    return server


def _static(body: bytes, kind: str) -> Callable[[Any], None]:
    def route(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


@pytest.fixture
def servers() -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    """(allow-listed server on 127.0.0.9, live but refused server on 127.0.0.2)."""
    allowed = _serve_content(LoopbackServer(ALLOWED))
    forbidden = _serve_content(LoopbackServer(FORBIDDEN))
    yield allowed, forbidden
    allowed.close()
    forbidden.close()


@pytest.fixture
def tls_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    """The same pair over TLS on one port, with a certificate for the test names; the guard
    trusts its CA through SSL_CERT_FILE (names need https unless allow-listed by name)."""
    pki = make_pki(tmp_path, days_left=30, names=NAMES)
    allowed = _serve_content(LoopbackServer(ALLOWED, tls=pki.server_context))
    forbidden = _serve_content(LoopbackServer(FORBIDDEN, allowed.port, tls=pki.server_context))
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_path))
    ssrf._ssl_context.cache_clear()
    yield allowed, forbidden
    allowed.close()
    forbidden.close()
    monkeypatch.delenv("SSL_CERT_FILE")
    ssrf._ssl_context.cache_clear()


def refused_hops(forbidden: LoopbackServer, path: str) -> dict[str, str]:
    """Route on the allowed server -> where it redirects; every location is refused."""
    https_forbidden = forbidden.base.replace("http://", "https://")
    return {
        "/to-forbidden": forbidden.base + path,
        "/to-forbidden-https": https_forbidden + path,
        "/to-metadata": "https://169.254.169.254/latest/meta-data/",
        "/to-file": "file:///etc/passwd",
        "/to-gopher": f"gopher://{FORBIDDEN}:6379/_INFO",
        "/to-decimal": f"https://2130706434:{forbidden.port}{path}",  # 127.0.0.2
        "/to-userinfo": f"https://{ALLOWED}@{FORBIDDEN}:{forbidden.port}{path}",
    }


def install_redirects(allowed: LoopbackServer, forbidden: LoopbackServer, path: str) -> None:
    for route, location in refused_hops(forbidden, path).items():
        allowed.routes[route] = redirect_to(location)
    allowed.routes["/loop"] = redirect_to("/loop")
    allowed.routes["/to-self"] = redirect_to(path)


def guard_message(url: str) -> str:
    """What the guard says about ``url`` on its own (no network)."""
    try:
        ssrf.check_url(url)
    except BadRequest as exc:
        return exc.message
    raise AssertionError(f"{url} is not refused by the guard")
