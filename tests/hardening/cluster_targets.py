"""What the cluster test's side effects land on, each counted at the target itself.

The sshd targets append to marker files (one line per command or playbook step that really
ran), the webhook receiver logs every delivery it gets, the asset server counts fetches per
path, and the VaultShield proxy answers visitors from chosen loopback source addresses.
"""

from __future__ import annotations

import collections
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

from tests.codec.images import png_bytes, synthetic
from tests.traffic.conftest import Echo


class AssetServer:
    """Serves small PNG images on loopback and counts every GET per path."""

    def __init__(self) -> None:
        self.fetches: collections.Counter[str] = collections.Counter()
        self.assets: dict[str, bytes] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches[self.path] += 1
                body = server.assets.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add_image(self, name: str, seed: int) -> str:
        """A 24x32 image (small, so a compaction takes seconds); returns its URL."""
        self.assets[f"/{name}.png"] = png_bytes(synthetic(24, 32, seed=seed))
        return f"{self.base}/{name}.png"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def asset_server() -> Iterator[AssetServer]:
    server = AssetServer()
    try:
        yield server
    finally:
        server.close()


@dataclass
class Markers:
    """Files on the sshd targets (the same machine: sshd runs on loopback) that commands append
    to; the test reads them to count what actually happened."""

    directory: Path
    gate: Path = field(init=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.gate = self.directory / "gate"

    @property
    def agent(self) -> Path:
        return self.directory / "agent-marker"

    @property
    def playbook(self) -> Path:
        return self.directory / "playbook-marker"

    @staticmethod
    def lines(path: Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    def counts(self, path: Path) -> collections.Counter[str]:
        return collections.Counter(self.lines(path))


@contextmanager
def upstream_server() -> Iterator[str]:
    """The site behind the VaultShield proxy: echoes what it received."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
