"""One pure-ASGI middleware for what every HTTP exchange needs.

It gives each request an id (``X-Request-ID``, honoured when the client sends a sane one), adds
the rate-limit headers the route's security check decided, refuses bodies over the limit with 413,
renders any unhandled exception as a 500 in the error shape (no stack trace leaves the process),
logs one structured line per request (never the Authorization header or query string) and feeds
the Prometheus metrics.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

log = logging.getLogger("execflow.http")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

REQUESTS = Counter("execflow_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "execflow_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that hands out the buffered body first, then what the client sends next."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if REQUEST_ID_RE.match(offered) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status_holder = {"status": 500, "started": False}

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._send_error(
                send, request_id, 413, "Request body too large", "PAYLOAD_TOO_LARGE"
            )
            self._observe(scope, 413, started, request_id)
            return

        if declared is None and scope.get("method") in BODY_METHODS:
            buffered = await self._buffer_body(receive)
            if buffered is None:  # chunked and over the limit: refuse before the route acts
                await self._send_error(
                    send, request_id, 413, "Request body too large", "PAYLOAD_TOO_LARGE"
                )
                self._observe(scope, 413, started, request_id)
                return
            receive = _replay(buffered, receive)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413, "Request body too large")
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                extra = [(b"x-request-id", request_id.encode())]
                decision = state.get("ratelimit")
                if decision is not None:
                    extra += [
                        (k.lower().encode(), v.encode()) for k, v in decision.headers().items()
                    ]
                current = list(message.get("headers", []))
                names = {k.lower(): v for k, v in current}
                if names.get(b"content-type", b"").startswith(b"text/event-stream") and (
                    b"x-accel-buffering" not in names
                ):
                    extra.append((b"x-accel-buffering", b"no"))  # a reverse proxy must not buffer
                message["headers"] = current + extra
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not status_holder["started"]:
                await self._send_error(
                    send, request_id, 500, "Internal server error", "INTERNAL_ERROR"
                )
            status_holder["status"] = 500
        self._observe(scope, int(status_holder["status"]), started, request_id)

    async def _buffer_body(self, receive: Receive) -> list[Message] | None:
        """The request's body messages, or None once they pass the limit.

        A body without Content-Length (chunked) is read up to the limit before the route runs,
        so every write route refuses an oversized one with 413, including routes that never
        read their body (they would otherwise act while the rest is still arriving).
        """
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages  # a disconnect: let the app see it
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    @staticmethod
    async def _send_error(
        send: Send, request_id: str, status: int, message: str, code: str
    ) -> None:
        body = json.dumps(error_body(message, code)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _observe(scope: Scope, status: int, started: float, request_id: str) -> None:
        elapsed = time.perf_counter() - started
        route: Any = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "")
        REQUESTS.labels(method, template, str(status)).inc()
        LATENCY.labels(method, template).observe(elapsed)
        principal = scope.get("state", {}).get("principal")
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": method,
                "path": scope.get("path"),
                "route": template,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "key_id": getattr(principal, "key_id", None),
                "client": (scope.get("client") or (None,))[0],
            },
        )
