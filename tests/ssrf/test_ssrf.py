"""The SSRF guard refuses every non-public target, however it is spelled or reached."""

from __future__ import annotations

import socket
from typing import Any

import httpcore
import pytest

from models.errors import BadRequest, PayloadTooLarge, UpstreamError
from tests.ssrf.cases import REFUSED_URLS
from tests.ssrf.conftest import big, redirect_to, slow
from tools import ssrf
from tools.ssrf import check_url, guarded_request


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_check_url_refuses(url: str, allowlist: Any) -> None:
    with pytest.raises(BadRequest) as info:
        check_url(url)
    assert info.value.code in ("SSRF_BLOCKED", "URL_INVALID")
    assert info.value.status_code == 400


def test_the_suite_is_big_enough() -> None:
    assert len(REFUSED_URLS) >= 30


@pytest.mark.parametrize("url", REFUSED_URLS)
async def test_guarded_request_refuses_without_connecting(
    url: str, allowlist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise AssertionError("refused URLs must not be resolved")

    async def no_connect(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("refused URLs must not be connected to")

    monkeypatch.setattr(ssrf, "_resolve", no_dns)
    monkeypatch.setattr(ssrf, "_connect_tcp", no_connect)
    with pytest.raises(BadRequest) as info:
        await guarded_request("POST", url, content=b"{}")
    assert info.value.code in ("SSRF_BLOCKED", "URL_INVALID")


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://hooks.zapier.com/hooks/catch/123/abc/",
        "https://93.184.216.34/",
        "https://[2606:2800:220:1:248:1893:25c7:1946]:8443/x",
        "https://xn--bcher-kva.example/",
        "https://b\u00fccher.example/",
    ],
)
def test_check_url_accepts_public_targets(url: str, allowlist: Any) -> None:
    check_url(url)


def test_allowlist_admits_hosts_and_cidrs(allowlist: Any) -> None:
    allowlist(["10.0.0.0/8", "receiver.internal", "127.0.0.1"])
    check_url("https://10.1.2.3/")
    check_url("http://10.1.2.3:8080/hook")  # plain http is fine for allow-listed hosts
    check_url("http://receiver.internal/")
    check_url("http://127.0.0.1:9000/")
    with pytest.raises(BadRequest):
        check_url("https://192.168.0.1/")
    with pytest.raises(BadRequest):
        check_url("http://example.com/")


@pytest.mark.parametrize(
    "answers",
    [
        ["10.0.0.5"],
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["93.184.216.34", "192.168.0.10"],  # one private answer refuses the name
        ["::1"],
        ["::ffff:127.0.0.1"],
        ["fd00::1"],
    ],
)
async def test_names_resolving_to_private_addresses_are_refused(
    answers: list[str], allowlist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_dns(host: str, port: int) -> list[str]:
        return answers

    async def no_connect(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("must not connect")

    monkeypatch.setattr(ssrf, "_resolve", fake_dns)
    monkeypatch.setattr(ssrf, "_connect_tcp", no_connect)
    check_url("https://rebind.example.com/")  # the name itself looks fine...
    with pytest.raises(BadRequest) as info:  # ...its addresses are not
        await guarded_request("GET", "https://rebind.example.com/")
    assert info.value.code == "SSRF_BLOCKED"


async def test_resolution_is_pinned_into_the_connection(
    allowlist: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DNS answer that changes after the check cannot redirect the connection."""
    lookups: list[str] = []
    connected_to: list[str] = []

    async def rebinding_dns(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.216.34"] if len(lookups) == 1 else ["127.0.0.1"]

    async def record_connect(host: str, port: int, *args: Any) -> Any:
        connected_to.append(host)
        raise httpcore.ConnectError("test double: no outside traffic")

    monkeypatch.setattr(ssrf, "_resolve", rebinding_dns)
    monkeypatch.setattr(ssrf, "_connect_tcp", record_connect)
    with pytest.raises(UpstreamError) as info:
        await guarded_request("GET", "https://rebind.example.com/")
    assert info.value.code == "FETCH_FAILED"
    assert lookups == ["rebind.example.com"]  # resolved once
    assert connected_to == ["93.184.216.34"]  # connected to the checked address, not the name


async def test_connected_address_is_checked(
    allowlist: Any, monkeypatch: pytest.MonkeyPatch, loopback_server: Any
) -> None:
    """If the socket lands on a private peer anyway (e.g. a transparent proxy), refuse."""

    async def public_dns(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    async def land_on_loopback(host: str, port: int, *args: Any) -> Any:
        return await httpcore.AnyIOBackend().connect_tcp("127.0.0.1", loopback_server.port)

    monkeypatch.setattr(ssrf, "_resolve", public_dns)
    monkeypatch.setattr(ssrf, "_connect_tcp", land_on_loopback)
    with pytest.raises(BadRequest) as info:
        await guarded_request("GET", f"https://public.example.com:{loopback_server.port}/")
    assert info.value.code == "SSRF_BLOCKED"
    assert loopback_server.hits == []  # no request was sent


async def test_allowlisted_loopback_request_works(allowlist: Any, loopback_server: Any) -> None:
    allowlist(["127.0.0.1"])
    response = await guarded_request("POST", loopback_server.base + "/echo", content=b"hello")
    assert response.status_code == 200
    assert response.content == b"ok POST hello"
    assert response.elapsed_ms >= 0
    assert response.url == loopback_server.base + "/echo"


async def test_redirects_are_not_followed_by_default(allowlist: Any, loopback_server: Any) -> None:
    allowlist(["127.0.0.1"])
    loopback_server.routes["/r"] = redirect_to("http://169.254.169.254/latest/meta-data/")
    response = await guarded_request("POST", loopback_server.base + "/r", content=b"{}")
    assert response.status_code == 302
    assert loopback_server.hits == ["POST /r"]


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:{port}/secret",
        "http://[::1]:{port}/secret",
        "http://0xa9fea9fe/latest/",  # 169.254.169.254 in hex
        "http://2130706434:{port}/secret",  # 127.0.0.2: not on the allow-list
        "http://10.0.0.1/",
        "file:///etc/passwd",
        "https://user@example.com/",
    ],
)
async def test_redirects_to_private_addresses_are_refused(
    location: str, allowlist: Any, loopback_server: Any
) -> None:
    allowlist(["127.0.0.1"])
    loopback_server.routes["/r"] = redirect_to(location.format(port=loopback_server.port))
    with pytest.raises(BadRequest) as info:
        await guarded_request("GET", loopback_server.base + "/r", max_redirects=5)
    assert info.value.code in ("SSRF_BLOCKED", "URL_INVALID")
    assert loopback_server.hits == ["GET /r"]


async def test_allowed_redirect_is_followed(allowlist: Any, loopback_server: Any) -> None:
    allowlist(["127.0.0.1"])
    loopback_server.routes["/r"] = redirect_to("/final")
    response = await guarded_request("POST", loopback_server.base + "/r", max_redirects=2)
    assert response.status_code == 200
    assert response.url.endswith("/final")
    assert loopback_server.hits == ["POST /r", "GET /final"]


async def test_oversized_response_is_refused(allowlist: Any, loopback_server: Any) -> None:
    allowlist(["127.0.0.1"])
    loopback_server.routes["/big"] = big(50_000)
    with pytest.raises(PayloadTooLarge):
        await guarded_request("GET", loopback_server.base + "/big", max_bytes=10_000)


async def test_timeout_is_a_fetch_failure(allowlist: Any, loopback_server: Any) -> None:
    allowlist(["127.0.0.1"])
    loopback_server.routes["/slow"] = slow(2.0)
    with pytest.raises(UpstreamError) as info:
        await guarded_request("GET", loopback_server.base + "/slow", timeout=0.3)
    assert info.value.code == "FETCH_FAILED"
    assert "timed out" in info.value.message


async def test_connection_refused_is_a_fetch_failure(allowlist: Any) -> None:
    allowlist(["127.0.0.1"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(UpstreamError) as info:
            await guarded_request("GET", f"http://127.0.0.1:{port}/")
    assert info.value.code == "FETCH_FAILED"


def test_ip_rules() -> None:
    from ipaddress import ip_address

    assert ssrf.is_public_address(ip_address("93.184.216.34"))
    assert ssrf.is_public_address(ip_address("2606:4700::1111"))
    for text in ["127.0.0.1", "10.1.1.1", "::1", "::ffff:8.8.8.8", "64:ff9b::808:808"]:
        assert not ssrf.is_public_address(ip_address(text)), text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1, 10.0.0.0/8,receiver.test", ["127.0.0.1", "10.0.0.0/8", "receiver.test"]),
        ('["127.0.0.1"]', ["127.0.0.1"]),
        ("", []),
    ],
)
def test_allowlist_env_spellings(raw: str, expected: list[str], monkeypatch: Any) -> None:
    from models.settings import Settings

    monkeypatch.setenv("EXECFLOW_OUTBOUND_ALLOWLIST", raw)
    assert Settings().outbound_allowlist == expected
