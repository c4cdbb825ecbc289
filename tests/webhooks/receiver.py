"""A real HTTP receiver on loopback that records deliveries and verifies them independently.

Verification uses only ``hmac``/``hashlib`` and the ``standardwebhooks`` library, never ExecFlow
code. Behaviour is scripted per request: ``ok``, an HTTP status (with headers), ``sleep`` past
the sender's timeout, or ``hold`` until the test releases it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int | None = None

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Step:
    kind: str = "ok"  # ok | status | sleep | hold
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def verify_fluxcybers(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The reference's check: any listed sha256= value equals HMAC-SHA256(secret, body)."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    offered = headers.get("x-fluxcybers-signature", "").split(",")
    return any(hmac.compare_digest(expected, value.strip()) for value in offered)


def verify_standard(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except Exception:
        return False
    return True


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: deque[Step] = deque()
        self.release = threading.Event()
        self.holding = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                record = Received({k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.lock:
                    receiver.received.append(record)
                    step = receiver.script.popleft() if receiver.script else Step()
                if step.kind == "sleep":
                    time.sleep(step.seconds)
                elif step.kind == "hold":
                    receiver.holding.set()
                    receiver.release.wait(60)
                status = step.status if step.kind == "status" else 200
                record.answered = -1 if step.kind == "sleep" else status  # -1: sender gave up
                payload = b'{"received":true}'
                try:
                    self.send_response(status)
                    for k, v in step.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the sender gave up (timeout) or died

            def log_message(self, *args: object) -> None:
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def plan(self, *steps: Step) -> None:
        with self.lock:
            self.script.extend(steps)

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in list(self.received) if r.event["type"] == event_type]

    def acknowledged_ids(self) -> set[str]:
        """Ids the receiver answered 2xx to (within the sender's timeout)."""
        return {r.id for r in list(self.received) if r.answered and 200 <= r.answered < 300}

    def unique_ids(self) -> set[str]:
        return {r.id for r in list(self.received)}

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
