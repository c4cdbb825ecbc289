"""One probe of one site: DNS, HTTP status, latency, keyword, content change, TLS expiry, headers.

A probe is a list of ``Check`` results. *Blocking* checks decide whether the probe failed (and
so feed the incident state machine); the others are warnings that show up in the probe record
and the health figures but never open an incident on their own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from models.errors import BadRequest
from models.sentry import SEVERITIES
from tools.ssrf import monitor_address_allowed, parse_ipv4_spelling

MAX_BODY_BYTES = 2_000_000
USER_AGENT = "ExecFlow-SentryV/1.0"
SECURITY_HEADERS = (
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
)


@dataclass(frozen=True)
class ProbeConfig:
    """Per-site probe settings, read from ``Site.meta["sentry"]`` (all optional)."""

    url: str
    interval_s: float = 60.0
    timeout_s: float = 10.0
    expected_keyword: str | None = None
    latency_threshold_ms: float | None = None
    cert_warn_days: float = 14.0
    cert_critical_days: float = 3.0
    enabled: bool = True
    site_id: int | None = None  # sends a VaultShield probe pass for this site when set

    @classmethod
    def of(cls, url: str, meta: dict[str, Any] | None, site_id: int | None = None) -> ProbeConfig:
        raw = dict((meta or {}).get("sentry") or {})
        fields = set(cls.__dataclass_fields__) - {"url", "site_id"}
        known = {k: raw[k] for k in fields if k in raw}
        return cls(url=url, site_id=site_id, **known)


@dataclass
class Check:
    name: str
    ok: bool
    blocking: bool = True
    severity: str = "low"
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "blocking": self.blocking, "severity": self.severity, **self.detail}


@dataclass
class ProbeOutcome:
    started_at: dt.datetime
    checks: list[Check]
    status_code: int | None = None
    latency_ms: float | None = None
    content_hash: str | None = None

    @property
    def failures(self) -> list[str]:
        return [c.name for c in self.checks if c.blocking and not c.ok]

    @property
    def warnings(self) -> list[str]:
        return [c.name for c in self.checks if not c.blocking and not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def severity(self) -> str | None:
        failing = [c.severity for c in self.checks if c.blocking and not c.ok]
        return max(failing, key=SEVERITIES.index) if failing else None

    def checks_dict(self) -> dict[str, Any]:
        return {c.name: c.as_dict() for c in self.checks}


async def probe(
    config: ProbeConfig,
    *,
    client: httpx.AsyncClient,
    previous_hash: str | None,
    now: dt.datetime,
) -> ProbeOutcome:
    """Run every check against ``config.url``; never raises for the target's faults."""
    outcome = ProbeOutcome(started_at=now, checks=[])
    parts = urlsplit(config.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        outcome.checks.append(Check("config", False, severity="high", detail={"url": "invalid"}))
        return outcome
    port = parts.port or (443 if parts.scheme == "https" else 80)
    dns = await _check_dns(parts.hostname, port, config.timeout_s)
    outcome.checks.append(dns)
    if not dns.ok:
        return outcome
    await _check_http(config, client, outcome, previous_hash, now)
    return outcome


def _literal(host: str) -> str | None:
    """The address a literal host names (any IPv4 spelling browsers accept), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        address = parse_ipv4_spelling(host)
    except BadRequest:
        return None
    return None if address is None else str(address)


async def _check_dns(host: str, port: int, limit_s: float) -> Check:
    started = time.perf_counter()
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]  # a literal needs no lookup
    else:
        try:
            infos = await asyncio.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                limit_s,
            )
        except (OSError, TimeoutError) as exc:
            return Check("dns", False, severity="critical", detail={"error": type(exc).__name__})
        addresses = sorted({str(info[4][0]) for info in infos})
    elapsed = round((time.perf_counter() - started) * 1000, 2)
    detail: dict[str, Any] = {"addresses": addresses, "resolve_ms": elapsed}
    if not all(monitor_address_allowed(ipaddress.ip_address(a.split("%")[0])) for a in addresses):
        return _forbidden(detail)
    return Check("dns", True, detail=detail)


def _forbidden(detail: dict[str, Any]) -> Check:
    return Check("dns", False, severity="high", detail={**detail, "error": "forbidden target"})


def _probe_headers(config: ProbeConfig) -> dict[str, str]:
    """Our user agent, and a VaultShield pass for the site, so that its shield mode (which
    challenges every visitor) does not make the site look down to its own monitor."""
    headers = {"User-Agent": USER_AGENT}
    if config.site_id is not None:
        from tools.vaultshield.challenge import PROBE_HEADER, probe_pass, shield_secret

        headers[PROBE_HEADER] = probe_pass(shield_secret(), config.site_id)
    return headers


async def _check_http(
    config: ProbeConfig,
    client: httpx.AsyncClient,
    outcome: ProbeOutcome,
    previous_hash: str | None,
    now: dt.datetime,
) -> None:
    started = time.perf_counter()
    peer_cert: bytes | None = None
    try:
        async with client.stream(
            "GET", config.url, timeout=config.timeout_s, headers=_probe_headers(config)
        ) as response:
            peer_cert = _peer_certificate(response)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) >= MAX_BODY_BYTES:
                    break
    except httpx.HTTPError as exc:
        outcome.checks.append(_connection_failure(exc))
        return
    except BadRequest:  # the connection's own resolution found a forbidden address
        dns = [c for c in outcome.checks if c.name == "dns"]
        outcome.checks = [c for c in outcome.checks if c.name != "dns"]
        outcome.checks.append(_forbidden({**(dns[0].detail if dns else {}), "stage": "connect"}))
        return
    latency = round((time.perf_counter() - started) * 1000, 2)
    outcome.status_code, outcome.latency_ms = response.status_code, latency
    outcome.content_hash = hashlib.sha256(bytes(body)).hexdigest()
    changed = previous_hash is not None and previous_hash != outcome.content_hash
    outcome.checks += [
        _status_check(response.status_code),
        _latency_check(latency, config.latency_threshold_ms),
        _content_check(outcome.content_hash, previous_hash, changed),
    ]
    if config.expected_keyword:
        outcome.checks.append(_keyword_check(bytes(body), config.expected_keyword, changed))
    if peer_cert is not None:
        outcome.checks.append(_tls_check(peer_cert, config, now))
    outcome.checks.append(_headers_check(response.headers, https=config.url.startswith("https")))


def _peer_certificate(response: httpx.Response) -> bytes | None:
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object.getpeercert(binary_form=True)


def _connection_failure(exc: httpx.HTTPError) -> Check:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
        return Check("tls", False, severity="critical", detail={"error": text[:200]})
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable"
    return Check("http", False, severity="critical", detail={"error": kind})


def _status_check(status: int) -> Check:
    if status >= 500:
        return Check("http", False, severity="high", detail={"status": status})
    if status >= 400:
        return Check("http", False, severity="medium", detail={"status": status})
    return Check("http", True, detail={"status": status})


def _latency_check(latency_ms: float, threshold_ms: float | None) -> Check:
    detail = {"latency_ms": latency_ms, "threshold_ms": threshold_ms}
    slow = threshold_ms is not None and latency_ms > threshold_ms
    return Check("latency", not slow, severity="low", detail=detail)


def _content_check(current: str, previous: str | None, changed: bool) -> Check:
    detail = {"hash": current, "previous_hash": previous, "changed": changed}
    return Check("content", not changed, blocking=False, severity="medium", detail=detail)


def _keyword_check(body: bytes, keyword: str, changed: bool) -> Check:
    found = keyword.encode() in body
    # A missing keyword right after the page changed is the signature of a defacement.
    defaced = not found and changed
    return Check(
        "keyword",
        found,
        severity="critical" if defaced else "medium",
        detail={"keyword_found": found, "possible_defacement": defaced},
    )


def _tls_check(der: bytes, config: ProbeConfig, now: dt.datetime) -> Check:
    cert = x509.load_der_x509_certificate(der)
    expires = cert.not_valid_after_utc
    days_left = round((expires - now).total_seconds() / 86400, 2)
    detail = {"expires_at": expires.isoformat(), "days_left": days_left}
    if days_left < 0:
        return Check("tls", False, severity="critical", detail=detail)
    if days_left < config.cert_critical_days:
        return Check("tls", False, severity="high", detail=detail)
    warn = days_left < config.cert_warn_days
    return Check("tls", not warn, blocking=False, severity="low", detail=detail)


def _headers_check(headers: httpx.Headers, *, https: bool) -> Check:
    wanted = SECURITY_HEADERS + (("strict-transport-security",) if https else ())
    missing = [h for h in wanted if h not in headers]
    return Check("security_headers", not missing, blocking=False, detail={"missing": missing})
