"""SSRF against the outbound features that may reach private networks: Sentry V probes and the
VaultShield proxy's upstream. Their policy is weaker than the webhook guard's (monitoring and
fronting internal sites is the point) but one rule holds: never a metadata or link-local address,
in any spelling, not even when a name's DNS answer changes after it was checked (rebinding).

DNS is faked at the event loop (``*.rebind.test``) and every connection off loopback is refused
and recorded by the egress guard, so a failure shows up as a recorded attempt, not a packet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from models.db import Database
from models.sites import Site
from tests.conftest import KeyFactory, auth
from tests.ssrf.conftest import LoopbackServer
from tests.support.netguard import Egress, FakeDns
from tools.sentry.probes import ProbeConfig, probe
from tools.sentry.scheduler import make_client, probe_site
from tools.vaultshield.proxy import ShieldProxy

NOW = dt.datetime.now(dt.UTC)
METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[2002:a9fe:a9fe::]/",  # 6to4
    "http://[fd00:ec2::254]/",  # AWS IPv6 metadata
    "http://100.100.100.200/",  # Alibaba
    "http://168.63.129.16/",  # Azure WireServer
    "http://192.0.0.192/",  # Oracle
    "http://0xa9fea9fe/",  # 169.254.169.254 in hex
    "http://2852039166/",  # ... in decimal
    "http://0251.0376.0251.0376/",  # ... in octal
    "http://[fe80::1]/",
    "http://0.0.0.0/",
]
# A monitor may reach private addresses: these are accepted at registration.
PRIVATE_URLS = ["http://10.0.0.5:8080/health", "http://127.0.0.1:9/", "https://intranet.corp/"]


@pytest.fixture
def upstream() -> Any:
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture
async def probe_client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c


async def _probe(url: str, client: httpx.AsyncClient) -> Any:
    return await probe(
        ProbeConfig(url=url, timeout_s=2), client=client, previous_hash=None, now=NOW
    )


@pytest.mark.parametrize("url", METADATA_URLS)
async def test_probes_never_fetch_metadata_addresses(
    url: str, probe_client: httpx.AsyncClient, netguard: tuple[FakeDns, Egress]
) -> None:
    _dns, egress = netguard
    outcome = await _probe(url, probe_client)
    assert outcome.failures == ["dns"]
    assert outcome.checks_dict()["dns"]["error"] == "forbidden target"
    assert egress.attempts == []


async def test_probe_rebinding_to_metadata_is_refused_at_connect(
    upstream: LoopbackServer, probe_client: httpx.AsyncClient, netguard: tuple[FakeDns, Egress]
) -> None:
    dns, egress = netguard
    url = f"http://site.rebind.test:{upstream.port}/"
    dns.set("site.rebind.test", ["127.0.0.1"])
    healthy = await _probe(url, probe_client)  # positive control: the name works
    assert healthy.ok and upstream.hits == ["GET /"]

    dns.set("site.rebind.test", ["127.0.0.1"], ["169.254.169.254"])  # check, then connect
    rebound = await _probe(url, probe_client)  # the server closes each connection: a new one
    assert rebound.failures == ["dns"]
    assert rebound.checks_dict()["dns"]["stage"] == "connect"
    assert egress.attempts == [] and upstream.hits == ["GET /"]


async def test_probe_site_refuses_a_rebound_registered_site(
    database: Database, upstream: LoopbackServer, netguard: tuple[FakeDns, Egress]
) -> None:
    """The scheduler's own entry point, on a site row: a new connection re-checks the name."""
    dns, egress = netguard
    async with database.session() as session:
        site = Site(name="rebinding-site", url=f"http://shop.rebind.test:{upstream.port}/")
        session.add(site)
        await session.commit()
        site_id = site.id
    dns.set("shop.rebind.test", ["127.0.0.1"])
    async with make_client() as client:
        first = await probe_site(site_id, now=NOW, client=client)
    dns.set("shop.rebind.test", ["127.0.0.1"], ["fd00:ec2::254"])
    async with make_client() as client:
        second = await probe_site(site_id, now=NOW, client=client)
    assert first is not None and first["ok"] is True, first
    assert second is not None and second["ok"] is False and "dns" in second["failures"]
    assert upstream.hits == ["GET /"] and egress.attempts == []


@pytest.mark.parametrize("field", ["url", "upstream_url"])
async def test_sites_api_refuses_metadata_urls(
    client: httpx.AsyncClient, make_key: KeyFactory, field: str
) -> None:
    headers = auth(await make_key("write"))
    for n, url in enumerate(METADATA_URLS):
        body = {"name": f"meta-{field}-{n}", "url": "https://shop.example/", field: url}
        response = await client.post("/api/sites", json=body, headers=headers)
        assert response.status_code == 400, (url, response.text)
        error = response.json()
        assert error["success"] is False and error["code"] == "SSRF_BLOCKED", url
    for n, url in enumerate(PRIVATE_URLS):  # positive control: private targets are the point
        body = {"name": f"private-{field}-{n}", "url": "https://shop.example/", field: url}
        response = await client.post("/api/sites", json=body, headers=headers)
        assert response.status_code == 201, (url, response.text)


async def test_proxy_never_forwards_to_a_metadata_upstream(
    client: httpx.AsyncClient,
    make_key: KeyFactory,
    upstream: LoopbackServer,
    netguard: tuple[FakeDns, Egress],
) -> None:
    """The operator's --upstream names a host whose DNS later says 169.254.169.254: 502."""
    dns, egress = netguard
    headers = auth(await make_key("write"))
    created = await client.post(
        "/api/sites", json={"name": "proxied", "url": "https://proxied.example/"}, headers=headers
    )
    site_id = created.json()["site"]["id"]
    from models.settings import get_settings

    proxy = ShieldProxy(
        settings=get_settings(),
        site_id=site_id,
        upstream=f"http://origin.rebind.test:{upstream.port}",
    )
    await proxy.start()
    try:
        transport = httpx.ASGITransport(app=proxy, client=("198.51.100.20", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxied") as visitor:
            dns.set("origin.rebind.test", ["127.0.0.1"])
            ok = await visitor.get("/page")
            assert ok.status_code == 200 and upstream.hits == ["GET /page"]  # positive control
            dns.set("origin.rebind.test", ["169.254.169.254"])
            refused = await visitor.get("/latest/meta-data/")
    finally:
        await proxy.stop()
    assert refused.status_code == 502
    assert upstream.hits == ["GET /page"] and egress.attempts == []
