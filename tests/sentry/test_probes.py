"""Probe checks against real loopback upstreams (no database)."""

from __future__ import annotations

import datetime as dt

import httpx

from tests.sentry.conftest import SECURE_HEADERS, Pki, Upstream
from tools.sentry.probes import ProbeConfig, probe
from tools.sentry.scheduler import make_client

NOW = dt.datetime.now(dt.UTC)


async def run(
    url: str, client: httpx.AsyncClient, previous: str | None = None, **kw: object
) -> object:
    return await probe(ProbeConfig(url=url, **kw), client=client, previous_hash=previous, now=NOW)  # type: ignore[arg-type]


async def test_healthy_site_passes_and_reports_missing_security_headers(
    upstream: Upstream, probe_client: httpx.AsyncClient
) -> None:
    outcome = await run(upstream.url, probe_client, expected_keyword="Welcome")
    assert outcome.ok and outcome.status_code == 200 and outcome.latency_ms > 0
    checks = outcome.checks_dict()
    assert checks["dns"]["ok"] and checks["keyword"]["keyword_found"]
    assert outcome.warnings == ["security_headers"]
    assert "x-frame-options" in checks["security_headers"]["missing"]

    upstream.headers = dict(SECURE_HEADERS)
    outcome = await run(upstream.url, probe_client, previous=outcome.content_hash)
    assert outcome.warnings == [] and not outcome.checks_dict()["content"]["changed"]


async def test_server_errors_and_client_errors_fail_with_their_severity(
    upstream: Upstream, probe_client: httpx.AsyncClient
) -> None:
    upstream.script.extend([503, 404])
    first = await run(upstream.url, probe_client)
    second = await run(upstream.url, probe_client)
    assert (first.ok, first.failures, first.severity) == (False, ["http"], "high")
    assert (second.failures, second.severity) == (["http"], "medium")


async def test_content_change_is_flagged_and_missing_keyword_after_it_is_defacement(
    upstream: Upstream, probe_client: httpx.AsyncClient
) -> None:
    first = await run(upstream.url, probe_client, expected_keyword="Welcome")
    upstream.body = "<html>Welcome, new layout</html>"
    changed = await run(
        upstream.url, probe_client, previous=first.content_hash, expected_keyword="Welcome"
    )
    assert changed.ok and changed.warnings == ["content", "security_headers"]
    assert changed.checks_dict()["content"]["previous_hash"] == first.content_hash

    upstream.body = "<html>hacked by nobody</html>"
    defaced = await run(
        upstream.url, probe_client, previous=changed.content_hash, expected_keyword="Welcome"
    )
    assert defaced.failures == ["keyword"] and defaced.severity == "critical"
    assert defaced.checks_dict()["keyword"]["possible_defacement"] is True


async def test_certificate_close_to_expiry(tls_upstream: tuple[Upstream, Pki]) -> None:
    up, pki = tls_upstream
    async with make_client(verify=pki.client_context) as client:
        outcome = await run(up.url, client)
        tls = outcome.checks_dict()["tls"]
        assert outcome.failures == ["tls"] and outcome.severity == "high"
        assert 1.5 < tls["days_left"] < 2.5
        assert tls["expires_at"] == pki.not_after.replace(microsecond=0).isoformat()
        assert outcome.warnings == []  # every security header, HSTS included, is sent

        relaxed = await run(up.url, client, cert_critical_days=1)
        assert relaxed.ok and relaxed.warnings == ["tls"]


async def test_untrusted_certificate_is_a_critical_tls_failure(
    tls_upstream: tuple[Upstream, Pki], probe_client: httpx.AsyncClient
) -> None:
    up, _ = tls_upstream
    outcome = await run(up.url, probe_client)  # system trust store: the test CA is unknown
    assert outcome.failures == ["tls"] and outcome.severity == "critical"


async def test_unreachable_and_forbidden_targets(probe_client: httpx.AsyncClient) -> None:
    from tests.support.processes import free_port

    down = await run(f"http://127.0.0.1:{free_port()}/", probe_client, timeout_s=2)
    assert down.failures == ["http"] and down.severity == "critical"
    assert down.checks_dict()["http"]["error"] == "unreachable"

    metadata = await run("http://169.254.169.254/latest/", probe_client)
    assert metadata.failures == ["dns"] and metadata.checks_dict()["dns"]["error"]
    bad = await run("ftp://127.0.0.1/", probe_client)
    assert bad.failures == ["config"]
