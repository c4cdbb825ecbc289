"""SSRF guard for every outbound URL ExecFlow fetches or posts to (webhooks, assets, feeds).

``check_url(url)`` validates a URL without touching the network: http(s) only, no userinfo, no
odd host spellings, and an IP-literal host must be a public address. ``guarded_request`` then
resolves the name itself, refuses the request if ANY resolved address is not public, connects
to the checked address (the resolution is pinned into the connection, so a DNS answer that
changes between check and connect cannot reach a private address), re-checks the address the
socket actually connected to, and re-checks every redirect hop.

Refused: loopback, RFC 1918, CGNAT, link-local (incl. 169.254.169.254), cloud metadata
addresses and names, multicast, reserved, unspecified, documentation and benchmark ranges, in
IPv4 and IPv6, including IPv4 embedded in IPv6 (mapped, compatible, NAT64, 6to4) and the
decimal/octal/hex/short IPv4 spellings (``2130706433``, ``0177.1``, ``0x7f.0.0.1``, ``127.1``).

``EXECFLOW_OUTBOUND_ALLOWLIST`` (setting ``outbound_allowlist``) lists hosts and CIDRs that may
be reached anyway (development, tests); plain ``http://`` is accepted only for those hosts.

Monitors and proxies (Sentry V probes, the VaultShield proxy's upstream) reach private networks
by design; ``guarded_transport`` gives them the same resolve-check-pin connection with a weaker
policy, ``monitor_address_allowed``: everything but metadata, link-local and unspecified.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
import typing
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from models.errors import BadRequest, PayloadTooLarge, UpstreamError
from models.settings import get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
USER_AGENT = "ExecFlow/0.1 (+https://fluxcybers.polsia.app)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# Denied on top of everything ``ipaddress`` does not call global (Python versions differ there).
_DENIED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT; also Alibaba metadata 100.100.100.200
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local; AWS/GCP/Azure/OpenStack metadata 169.254.169.254
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments; Oracle metadata 192.0.0.192
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. 255.255.255.255
        "168.63.129.16/32",  # Azure WireServer (a public address that is host-local)
        "::/128",
        "::1/128",
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0/96",  # IPv4-mapped
        "64:ff9b::/96",  # NAT64 well-known prefix
        "64:ff9b:1::/48",  # NAT64 local-use
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments incl. Teredo
        "2001:db8::/32",
        "2002::/16",  # 6to4 (embeds an IPv4 address)
        "fc00::/7",  # unique local; AWS metadata fd00:ec2::254
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)

# Never reachable, whatever else a caller's policy allows (monitors and proxies may reach private
# networks; nothing may reach a cloud metadata service or link-local addresses).
_NEVER_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "169.254.0.0/16",  # link-local; AWS/GCP/Azure/OpenStack metadata 169.254.169.254
        "100.100.100.200/32",  # Alibaba metadata
        "168.63.129.16/32",  # Azure WireServer
        "192.0.0.192/32",  # Oracle metadata
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "fe80::/10",
        "fd00:ec2::254/128",  # AWS IPv6 metadata
        "ff00::/8",
    )
)

_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_BLOCKED_NAMES = _METADATA_NAMES | {
    "localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
}
_BLOCKED_SUFFIXES = (".localhost", ".metadata.google.internal")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_IPV4_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


def _blocked(message: str) -> BadRequest:
    return BadRequest(message, code="SSRF_BLOCKED", fields=["url"])


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, code="URL_INVALID", fields=["url"])


# --------------------------------------------------------------------------- address rules


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = address.packed
    if packed[:12] == bytes(12) or packed[:12] == bytes.fromhex("0064ff9b0000000000000000"):
        return ipaddress.IPv4Address(packed[12:])
    if packed[:6] == bytes.fromhex("0064ff9b0001"):
        return ipaddress.IPv4Address(packed[12:])
    return None


def is_public_address(address: IPAddress) -> bool:
    """True when ``address`` is a globally routable unicast address ExecFlow may contact."""
    if any(address in net for net in _DENIED_NETWORKS if net.version == address.version):
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None and not is_public_address(inner):
            return False
    return bool(address.is_global) and not address.is_multicast


def reaches_metadata(address: IPAddress) -> bool:
    """True for metadata, link-local, unspecified and multicast addresses, however embedded."""
    if any(address in net for net in _NEVER_NETWORKS if net.version == address.version):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        return inner is not None and reaches_metadata(inner)
    return False


def monitor_address_allowed(address: IPAddress) -> bool:
    """The policy of monitors and proxies: private networks yes, metadata/link-local never."""
    return not reaches_metadata(address)


@dataclass(frozen=True)
class Allowlist:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    def allows_host(self, host: str) -> bool:
        if host in self.hosts:
            return True
        return any(h.startswith("*.") and host.endswith(h[1:]) for h in self.hosts)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in net for net in self.networks if net.version == address.version)


@lru_cache(maxsize=16)
def _parse_allowlist(entries: tuple[str, ...]) -> Allowlist:
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hosts.add(entry)
    return Allowlist(frozenset(hosts), tuple(networks))


def current_allowlist() -> Allowlist:
    """The allow-list in force (``EXECFLOW_OUTBOUND_ALLOWLIST``)."""
    return _parse_allowlist(tuple(get_settings().outbound_allowlist))


def address_allowed(address: IPAddress, allowlist: Allowlist | None = None) -> bool:
    """Public, or explicitly allow-listed."""
    allowlist = allowlist or current_allowlist()
    return is_public_address(address) or allowlist.allows_address(address)


# --------------------------------------------------------------------------- URL parsing


def parse_ipv4_spelling(host: str) -> ipaddress.IPv4Address | None:
    """Parse every IPv4 spelling ``inet_aton`` and browsers accept; None if ``host`` is a name.

    Follows the WHATWG URL rule: a host whose last label is a number is an IPv4 address (and
    an invalid one if the other labels do not parse), so ``0x7f.1`` cannot pass as a name.
    """
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]
    if not labels or not _IPV4_NUMBER.match(labels[-1]):
        return None
    numbers: list[int] = []
    for label in labels:
        if not _IPV4_NUMBER.match(label):
            raise _invalid(f"malformed IPv4 address {host!r}")
        if label[:2].lower() == "0x":
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if not set(label) <= set("01234567"):
                raise _invalid(f"malformed IPv4 address {host!r}")
            numbers.append(int(label, 8))
        else:
            numbers.append(int(label))
    if len(numbers) > 4:
        raise _invalid(f"malformed IPv4 address {host!r}")
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise _invalid(f"malformed IPv4 address {host!r}")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


@dataclass(frozen=True)
class Target:
    """A checked URL: scheme, normalised host, port and the IP literal if the host is one."""

    url: str
    scheme: str
    host: str
    port: int
    address: IPAddress | None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _normalise_host(raw_host: str) -> str:
    if "%" in raw_host:
        raise _invalid("percent-encoded or zone-scoped hosts are not accepted")
    host = raw_host.lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise _invalid("host is not a valid international domain name") from exc
    return host


def parse_target(url: str) -> Target:
    """Validate ``url`` syntactically and by literal address; no DNS. Raises BadRequest."""
    if not isinstance(url, str) or not url:
        raise _invalid("url is required")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url) or "\\" in url:
        raise _invalid("url contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise _invalid(f"url cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _blocked(f"scheme {scheme or '(none)'!r} is not allowed; use https")
    if not parts.netloc:
        raise _invalid("url has no host")
    if "@" in parts.netloc:
        raise _blocked("credentials (userinfo) in the url are not accepted")
    try:
        port = parts.port
    except ValueError as exc:
        raise _invalid("url has an invalid port") from exc
    if not hostname:
        raise _invalid("url has no host")
    host = _normalise_host(hostname)
    address: IPAddress | None = None
    if ":" in host:
        if not parts.netloc.startswith("["):
            raise _invalid("IPv6 hosts must be bracketed")
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise _invalid(f"malformed IPv6 address {host!r}") from exc
    else:
        address = parse_ipv4_spelling(host)
        if address is None:
            name = host.rstrip(".")
            if not name or not all(_HOST_LABEL.match(label) for label in name.split(".")):
                raise _invalid(f"malformed host name {host!r}")
            host = name
        else:
            host = str(address)
    default_port = 443 if scheme == "https" else 80
    return Target(url, scheme, host, port or default_port, address)


def _check_target(target: Target, allowlist: Allowlist) -> None:
    listed = allowlist.allows_host(target.host) or (
        target.address is not None and allowlist.allows_address(target.address)
    )
    if target.scheme == "http" and not listed:
        raise _blocked("plain http is accepted only for allow-listed hosts; use https")
    if listed:
        return
    if target.address is not None:
        if not is_public_address(target.address):
            raise _blocked(f"address {target.address} is not a public address")
        return
    if target.host in _BLOCKED_NAMES or target.host.endswith(_BLOCKED_SUFFIXES):
        raise _blocked(f"host {target.host!r} is a local or metadata name")
    if "." not in target.host:
        raise _blocked(f"single-label host {target.host!r} is not a public name")


def check_url(url: str) -> None:
    """Refuse a URL ExecFlow must not contact (BadRequest SSRF_BLOCKED or URL_INVALID).

    No DNS lookup happens here; ``guarded_request`` checks the resolved and connected addresses.
    """
    _check_target(parse_target(url), current_allowlist())


def check_monitor_url(url: str) -> None:
    """Refuse a URL a monitor or proxy must not contact: bad syntax, metadata or link-local.

    Private addresses and names pass (monitoring internal sites is the point); the connection
    is checked again, address by address, by ``guarded_transport``.
    """
    target = parse_target(url)
    if target.address is not None and reaches_metadata(target.address):
        raise _blocked(f"address {target.address} is a metadata or link-local address")
    if target.host in _METADATA_NAMES or target.host.endswith(".metadata.google.internal"):
        raise _blocked(f"host {target.host!r} is a metadata name")


# --------------------------------------------------------------------------- the connection


async def _resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (tests replace this to simulate DNS answers)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_base_backend = httpcore.AnyIOBackend()


async def _connect_tcp(
    host: str,
    port: int,
    timeout: float | None,  # noqa: ASYNC109 - httpcore's backend interface
    socket_options: typing.Any,
) -> httpcore.AsyncNetworkStream:
    return await _base_backend.connect_tcp(
        host, port, timeout=timeout, socket_options=socket_options
    )


def _address_of(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


def _literal(host: str) -> IPAddress | None:
    """The address a host names literally, in any IPv4 spelling; None for a name."""
    try:
        return _address_of(host)
    except ValueError:
        pass
    try:
        return parse_ipv4_spelling(host)
    except BadRequest:
        return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and pins the address; then checks the peer the socket connected to.

    Default policy: public addresses, plus what the allow-list names (an allow-listed host name
    is trusted to be internal, never to be a metadata address). With ``permits`` (monitors and
    proxies), every resolved address of every host must satisfy it.
    """

    def __init__(
        self,
        allowlist: Allowlist | None = None,
        *,
        permits: typing.Callable[[IPAddress], bool] | None = None,
    ) -> None:
        self.allowlist = allowlist or Allowlist(frozenset(), ())
        self.permits = permits

    def _allowed(self, address: IPAddress, host: str) -> bool:
        if self.permits is not None:
            return self.permits(address)
        if self.allowlist.allows_host(host):
            return not reaches_metadata(address) or self.allowlist.allows_address(address)
        return address_allowed(address, self.allowlist)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        host = host.strip("[]").lower()
        addresses = await self._addresses(host, port, timeout)
        for address in addresses:
            if not self._allowed(address, host):
                raise _blocked(f"{host!r} resolves to non-public address {address}")
        last_error: Exception | None = None
        for address in addresses:
            try:
                stream = await _connect_tcp(str(address), port, timeout, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            await self._check_peer(stream, host)
            return stream
        raise httpcore.ConnectError(str(last_error or f"cannot connect to {host!r}"))

    @staticmethod
    async def _addresses(host: str, port: int, timeout: float | None) -> list[IPAddress]:  # noqa: ASYNC109
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            candidates = await asyncio.wait_for(_resolve(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        if not candidates:
            raise httpcore.ConnectError(f"{host!r} has no addresses")
        return [_address_of(a) for a in candidates]

    async def _check_peer(self, stream: httpcore.AsyncNetworkStream, host: str) -> None:
        peer = stream.get_extra_info("server_addr")
        if peer is None:
            return  # not a socket (test doubles); nothing to check
        connected = _address_of(str(peer[0]))
        if not self._allowed(connected, host):
            await stream.aclose()
            raise _blocked(f"connection to {host!r} landed on non-public address {connected}")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# --------------------------------------------------------------------------- requests


@dataclass
class FetchResponse:
    status_code: int
    headers: httpx.Headers
    content: bytes
    url: str
    elapsed_ms: float


def _request_headers(
    target: Target, headers: typing.Mapping[str, str] | None, body: bytes | None
) -> list[tuple[bytes, bytes]]:
    merged = httpx.Headers({"User-Agent": USER_AGENT, "Accept": "*/*"})
    merged.update(headers or {})
    merged["Host"] = target.host_header
    if body is not None:
        merged["Content-Length"] = str(len(body))
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in merged.multi_items()]


async def _send_once(
    pool: httpcore.AsyncConnectionPool,
    method: str,
    target: Target,
    body: bytes | None,
    headers: typing.Mapping[str, str] | None,
    timeout: float,  # noqa: ASYNC109 - per-phase httpcore timeouts
    max_bytes: int,
) -> tuple[int, httpx.Headers, bytes]:
    extensions = {
        "timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    }
    async with pool.stream(
        method,
        target.url,
        headers=_request_headers(target, headers, body),
        content=body,
        extensions=extensions,
    ) as response:
        response_headers = httpx.Headers(
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers]
        )
        declared = response_headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise PayloadTooLarge(f"response is larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_stream():
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"response is larger than {max_bytes} bytes")
            chunks.append(chunk)
        return response.status, response_headers, b"".join(chunks)


def _next_hop(
    method: str, status: int, location: str, base: str, content: bytes | None
) -> tuple[str, str, bytes | None]:
    url = urljoin(base, location)
    if status == 303 or (status in (301, 302) and method == "POST"):
        return ("GET" if method != "HEAD" else "HEAD"), url, None
    return method, url, content


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~100 ms of CPU: do it once per process."""
    return ssl.create_default_context()


def guarded_transport(
    *,
    verify: ssl.SSLContext | bool = True,
    limits: httpx.Limits | None = None,
    permits: typing.Callable[[IPAddress], bool] = monitor_address_allowed,
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose every connection goes through ``GuardedBackend(permits=...)``.

    For clients that keep connections (Sentry probes, the VaultShield proxy): the address is
    resolved, checked and pinned on each new connection, so a DNS answer that changes later
    cannot move the client onto a forbidden address.
    """
    limits = limits or httpx.Limits()
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify:
        context = _ssl_context()
    else:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    # httpx has no public hook for httpcore's network backend: replace the pool it made.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(permits=permits),
    )
    return transport


async def guarded_request(
    method: str,
    url: str,
    *,
    content: bytes | str | None = None,
    headers: typing.Mapping[str, str] | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - the catalog's signature
    max_bytes: int = 10_000_000,
    max_redirects: int = 0,
) -> FetchResponse:
    """Send one request to a checked public address; follow at most ``max_redirects`` hops.

    Raises BadRequest (SSRF_BLOCKED, URL_INVALID), UpstreamError FETCH_FAILED (connection
    errors, timeouts, protocol errors) and PayloadTooLarge. A 3xx beyond the hop limit is
    returned as is (webhooks follow no redirects).
    """
    body = content.encode() if isinstance(content, str) else content
    allowlist = current_allowlist()
    started = time.perf_counter()
    ssl_context = _ssl_context()
    method = method.upper()
    try:
        async with (
            asyncio.timeout(timeout),
            httpcore.AsyncConnectionPool(
                ssl_context=ssl_context,
                network_backend=GuardedBackend(allowlist),
                max_connections=1,
                retries=0,
            ) as pool,
        ):
            hops = 0
            while True:
                target = parse_target(url)
                _check_target(target, allowlist)
                status, response_headers, data = await _send_once(
                    pool, method, target, body, headers, timeout, max_bytes
                )
                location = response_headers.get("location")
                if status in REDIRECT_STATUSES and location and hops < max_redirects:
                    hops += 1
                    method, url, body = _next_hop(method, status, location, url, body)
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                return FetchResponse(status, response_headers, data, url, elapsed)
    except TimeoutError as exc:
        raise UpstreamError(f"request timed out after {timeout:g}s", code="FETCH_FAILED") from exc
    except httpcore.TimeoutException as exc:
        raise UpstreamError(f"request timed out after {timeout:g}s", code="FETCH_FAILED") from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise UpstreamError(
            f"request failed: {exc or type(exc).__name__}", code="FETCH_FAILED"
        ) from exc
    except ssl.SSLError as exc:
        raise UpstreamError(f"TLS failed: {exc}", code="FETCH_FAILED") from exc
