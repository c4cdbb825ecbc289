"""The protecting reverse proxy: a plain ASGI app (served by uvicorn) in front of one site.

Every request is decided by the compiled ``Engine`` for the site; allowed ones are streamed to
the upstream with httpx and the answer is streamed back. Rules, quarantines and shield mode are
reloaded when the change version moves (polled from the database, or signalled over Redis
pub/sub) and when the earliest quarantine lapses. Per-request counts go to the database as
per-minute rows that ``GET /api/vaultshield/status`` sums.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import httpx

from models.db import Database, init_database, utcnow
from models.errors import BadRequest
from models.settings import Settings
from tools.ssrf import guarded_transport
from tools.vaultshield.challenge import (
    COOKIE_NAME,
    PROBE_HEADER,
    VERIFY_PATH,
    Challenger,
    shield_secret,
)
from tools.vaultshield.engine import Decision, Engine, LayeredEngine, Rule
from tools.vaultshield.geo import load_country_lookup
from tools.vaultshield.ratelimit import RateLimiter
from tools.vaultshield.service import channel, rules_version
from tools.vaultshield.snapshot import Snapshot, load_snapshot
from tools.vaultshield.stats import StatsRecorder

log = logging.getLogger("execflow.vaultshield")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

READY_PATH = "/.well-known/vaultshield/ready"
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
FOLLOWUP_RELOAD_SECONDS = 0.6
STATS_FLUSH_SECONDS = 2.0
MAX_VERIFY_BODY = 8192
MAX_OVERLAY_CHANGES = 2000


class ShieldProxy:
    def __init__(
        self,
        *,
        settings: Settings,
        site_id: int,
        upstream: str | None = None,
        proxy_id: str | None = None,
        database: Database | None = None,
    ) -> None:
        self.settings = settings
        self.site_id = site_id
        self.upstream_override = upstream.rstrip("/") if upstream else None
        self.proxy_id = (proxy_id or f"{socket.gethostname()}:{os.getpid()}")[:64]
        self.database = database
        self.limiter = RateLimiter()
        self.country_of = load_country_lookup(settings.vaultshield_geoip_path)
        self.engine: LayeredEngine | None = None
        self._base: Engine | None = None
        self._base_rules: dict[int, Rule] = {}
        self.snapshot: Snapshot | None = None
        self.version = -1
        self.stats = StatsRecorder(site_id=site_id, proxy_id=self.proxy_id)
        self.challenger: Challenger | None = None
        self.client: httpx.AsyncClient | None = None
        self._redis: Any = None
        self._dirty = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.database is None:
            self.database = init_database(self.settings.db_url)
        if self.settings.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.settings.redis_url)
        self.challenger = Challenger(
            shield_secret(),
            site_id=self.site_id,
            difficulty=self.settings.vaultshield_pow_difficulty,
            claim_once=self._claim_redis if self._redis is not None else None,
        )
        await self.reload()
        # Upstreams live on private networks; the guard still keeps metadata addresses out
        # (a write key sets a site's upstream_url, and this proxy faces the internet).
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
        self.client = httpx.AsyncClient(
            transport=guarded_transport(limits=limits),
            timeout=httpx.Timeout(60.0, connect=5.0),
            follow_redirects=False,
        )
        self._tasks = [
            asyncio.create_task(self._reloader()),
            asyncio.create_task(self._poll_version()),
            asyncio.create_task(self._flush_stats()),
        ]
        if self._redis is not None:
            self._tasks.append(asyncio.create_task(self._listen_redis()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._write_stats()
        if self.client is not None:
            await self.client.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        if self.database is not None:
            await self.database.dispose()

    # -- rule reloads ------------------------------------------------------------------------

    async def reload(self) -> None:
        """Load the site's snapshot and swap in a freshly compiled engine.

        The bulk of the rules sits in a base engine compiled once; later changes go into a
        small overlay (recompiled on every change, cheap), until they grow past
        ``MAX_OVERLAY_CHANGES`` and the base is rebuilt.
        """
        assert self.database is not None
        async with self._reload_lock:
            async with self.database.session() as session:
                version = await rules_version(session)
                known = self._base_rules if self._base is not None else None
                snapshot = await load_snapshot(session, self.site_id, known=known)
            rules = [r for r in snapshot.rules if r.source == "rule"]
            quarantines = [r for r in snapshot.rules if r.source != "rule"]
            ids = {r.id for r in rules}
            added = [r for r in rules if r.id not in self._base_rules]
            removed = frozenset(self._base_rules.keys() - ids)
            if self._base is None or len(added) + len(removed) > MAX_OVERLAY_CHANGES:
                self._base = await asyncio.to_thread(
                    Engine, rules, country_of=self.country_of, limiter=self.limiter
                )
                self._base_rules = {r.id: r for r in rules}
                added, removed = [], frozenset()
            overlay = Engine(
                [*added, *quarantines],
                allowlist=snapshot.allowlist,
                shield_mode=snapshot.shield_mode,
                shield_rate_per_minute=self.settings.vaultshield_shield_rate_per_minute,
                country_of=self.country_of,
                limiter=self.limiter,
            )
            engine = LayeredEngine(self._base, overlay, removed)
            self.engine, self.snapshot, self.version = engine, snapshot, version
            gc.freeze()  # the long-lived rule tables leave the collector's scans (short pauses)
            log.info(
                "vaultshield rules loaded",
                extra={"site_id": self.site_id, "rules": engine.rule_count, "version": version},
            )

    async def _reloader(self) -> None:
        loop = asyncio.get_running_loop()
        followup: float | None = None
        while True:
            timeout = None if followup is None else max(0.0, followup - loop.time())
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout)
            except TimeoutError:
                followup = None  # the second look, for writers that commit after signalling
            else:
                self._dirty.clear()
                followup = loop.time() + FOLLOWUP_RELOAD_SECONDS
            try:
                await self.reload()
            except Exception:
                log.exception("reloading VaultShield rules failed; keeping the previous ones")

    async def _poll_version(self) -> None:
        assert self.database is not None
        interval = self.settings.vaultshield_poll_seconds
        if self._redis is not None:
            interval = max(interval, 2.0)  # pub/sub carries changes; polling is the safety net
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.database.session() as session:
                    version = await rules_version(session)
            except Exception:
                log.warning("polling the VaultShield version failed", exc_info=True)
                continue
            expiry = self.snapshot.next_expiry if self.snapshot else None
            if version != self.version or (expiry is not None and utcnow() >= expiry):
                self._dirty.set()

    async def _listen_redis(self) -> None:
        name = channel(self.settings.redis_prefix)
        while True:
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(name)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._dirty.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("VaultShield Redis subscription lost; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    async def _claim_redis(self, token: str, expires: float) -> bool:
        key = f"{self.settings.redis_prefix}:vaultshield:used:"
        key += hashlib.sha256(token.encode()).hexdigest()
        return bool(await self._redis.set(key, b"1", nx=True, exat=int(expires) + 1))

    # -- statistics --------------------------------------------------------------------------

    async def _write_stats(self) -> None:
        assert self.database is not None
        async with self.database.session() as session:
            await self.stats.flush(session)

    async def _flush_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_FLUSH_SECONDS)
            try:
                await self._write_stats()
            except Exception:
                log.warning("writing VaultShield statistics failed", exc_info=True)

    # -- requests ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == READY_PATH:
            await _respond(send, 200, b"ready\n", "text/plain")
            return
        client_ip = (scope.get("client") or ("0.0.0.0", 0))[0]
        headers = _headers(scope)
        assert self.engine is not None and self.challenger is not None
        if path == VERIFY_PATH and scope["method"] == "POST":
            await self._verify(client_ip, receive, send)
            return
        passed = self.challenger.check_pass(
            _cookie(headers, COOKIE_NAME), client_ip
        ) or self.challenger.check_probe(headers.get(PROBE_HEADER))
        decision = self.engine.decide(
            client_ip, headers.get("user-agent", ""), passed_challenge=passed
        )
        self._count(decision, client_ip)
        if decision.outcome == "allow":
            await self._forward(scope, receive, send, headers, client_ip)
        elif decision.outcome == "block":
            await _respond(send, 403, _BLOCKED_PAGE, "text/html; charset=utf-8")
        elif decision.outcome == "rate_limited":
            retry = str(max(1, int(decision.retry_after + 0.999)))
            await _respond(
                send, 429, _LIMITED_PAGE, "text/html; charset=utf-8", [("retry-after", retry)]
            )
        else:
            target = path + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
            page = self.challenger.page(client_ip, target).encode()
            extra = [("x-vaultshield", "challenge"), ("cache-control", "no-store")]
            await _respond(send, 403, page, "text/html; charset=utf-8", extra)

    def _count(self, decision: Decision, client_ip: str) -> None:
        labels = [r.label for r in decision.logged]
        if decision.rule is not None:
            labels.append(decision.rule.label)
        self.stats.record(decision.outcome, client_ip, labels, len(decision.logged))

    async def _verify(self, client_ip: str, receive: Receive, send: Send) -> None:
        assert self.challenger is not None
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_VERIFY_BODY:
                await _respond(send, 413, b"too large\n", "text/plain")
                return
        form = {k: v[0] for k, v in parse_qs(body.decode("latin-1")).items() if v}
        next_path = form.get("next", "/")
        if not next_path.startswith("/") or next_path.startswith("//"):
            next_path = "/"
        if not await self.challenger.verify(
            form.get("token", ""), form.get("answer", ""), client_ip
        ):
            self.stats.record("challenge", client_ip, [], 0)
            page = self.challenger.page(client_ip, next_path).encode()
            await _respond(
                send, 403, page, "text/html; charset=utf-8", [("x-vaultshield", "challenge")]
            )
            return
        cookie = self.challenger.pass_cookie(client_ip)
        ttl = int(self.challenger.pass_ttl)
        await _respond(
            send,
            303,
            b"",
            "text/plain",
            [
                ("location", next_path),
                (
                    "set-cookie",
                    f"{COOKIE_NAME}={cookie}; Max-Age={ttl}; Path=/; HttpOnly; SameSite=Lax",
                ),
            ],
        )

    def _upstream(self) -> str:
        base = self.upstream_override or (self.snapshot.upstream_url if self.snapshot else None)
        if not base:
            raise RuntimeError("site has no upstream_url and none was given")
        return base.rstrip("/")

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], client_ip: str
    ) -> None:
        assert self.client is not None
        url = self._upstream() + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        out = [  # the probe pass is for this proxy only: the upstream never sees it
            (k, v)
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in HOP_BY_HOP
            and k.decode("latin-1").lower() != PROBE_HEADER
        ]
        forwarded = headers.get("x-forwarded-for")
        out.append(
            (
                b"x-forwarded-for",
                f"{forwarded}, {client_ip}".encode() if forwarded else client_ip.encode(),
            )
        )
        out.append((b"x-real-ip", client_ip.encode()))
        if "host" in headers:
            out.append((b"x-forwarded-host", headers["host"].encode("latin-1")))
        out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        has_body = "content-length" in headers or "transfer-encoding" in headers
        content = _request_body(receive) if has_body else None
        request = self.client.build_request(scope["method"], url, headers=out, content=content)
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.HTTPError, BadRequest) as exc:  # BadRequest: a forbidden upstream address
            log.warning("upstream request failed: %s", type(exc).__name__)
            await _respond(send, 502, b"Bad gateway\n", "text/plain")
            return
        try:
            response_headers = [
                (k, v)
                for k, v in response.headers.raw
                if k.decode("latin-1").lower() not in HOP_BY_HOP
            ]
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response_headers,
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        more = message.get("more_body", False)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[str, str]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in extra or []]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_BLOCKED_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>Access denied</title></head>"
    b"<body><h1>403 - Access denied</h1><p>This request was blocked by VaultShield.</p>"
    b"</body></html>"
)
_LIMITED_PAGE = (
    b"<!doctype html><html><head><meta charset='utf-8'><title>Too many requests</title></head>"
    b"<body><h1>429 - Too many requests</h1><p>Slow down and retry later.</p></body></html>"
)


def run_proxy(
    settings: Settings, *, site_id: int, host: str, port: int, upstream: str | None
) -> None:
    """Serve the proxy until interrupted (``execflow shield``)."""
    import uvicorn

    app = ShieldProxy(
        settings=settings,
        site_id=site_id,
        upstream=upstream,
        proxy_id=f"{socket.gethostname()}:{port}:{os.getpid()}",
    )
    started = time.monotonic()
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    log.info("vaultshield proxy stopped after %.0fs", time.monotonic() - started)
