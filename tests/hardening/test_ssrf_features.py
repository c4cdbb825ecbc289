"""SSRF through every outbound feature's real entry point: webhooks (create, update, ping and
delivery), CompactEdge ``asset_url`` (the CLI: test_ssrf_cli.py) and eShield feed imports by URL.

Every URL of the shared refusal list (tests/ssrf/cases.py) is submitted to each route: 400 in the
error shape, nothing stored, no DNS lookup, no connection. Then the fetch itself: redirects from
an allow-listed server to a refused address, a refused scheme and back to itself, and DNS
rebinding (a name that answered the allow-listed address when registered answers a refused one
later). The refused address is a live server (127.0.0.2, not allow-listed): a guard that let the
request through would show up in its hits. Each refusal has a positive control: the same fetch
from the allow-listed server (127.0.0.9) succeeds, and once 127.0.0.2 is allow-listed too, the
"refused" server is reached, so the suite cannot pass by refusing everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from compaction.store import CompactAsset
from models import ledger
from models.db import Database
from models.jobs import Job
from models.ledger import AuditEntry
from models.settings import Settings, configure, get_settings
from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.conftest import KeyFactory, auth
from tests.hardening.conftest import configure_module
from tests.hardening.ssrf_support import (
    ALLOWED,
    FORBIDDEN,
    NAMES,
    guard_message,
    install_redirects,
    refused_hops,
)
from tests.ssrf.cases import REFUSED_URLS
from tests.support.netguard import Egress, FakeDns
from tools.webhooks.delivery import AttemptOutcome, attempt_delivery
from tools.webhooks.dispatcher import claim_due, fan_out_once, read_cursor


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return configure_module(
        database_url,
        tmp_path_factory,
        outbound_allowlist=[ALLOWED],
        webhook_retry_schedule=[30.0],
        webhook_timeout_seconds=2.0,
        webhook_dispatcher=False,  # the delivery test drives the dispatcher's steps itself
    )


@pytest.fixture
def allow(settings: Settings) -> Iterator[Callable[..., None]]:
    """Widen the allow-list for the rest of one test; the module's settings come back after."""

    def widen(*entries: str) -> None:
        configure(get_settings().model_copy(update={"outbound_allowlist": list(entries)}))

    yield widen
    configure(settings)


@pytest.fixture(autouse=True)
async def no_leftover_webhooks(database: Database) -> AsyncIterator[None]:
    """Endpoints of one test never receive another test's events."""
    yield
    async with database.session() as session:
        for model in (WebhookAttempt, WebhookDelivery, WebhookEndpoint):
            await session.execute(delete(model))
        await session.commit()


# --------------------------------------------------------------------------- the features


@dataclass(frozen=True)
class Outcome:
    fetched: bool
    error: str


@dataclass(frozen=True)
class Feature:
    name: str
    path: str  # what the feature fetches from a test server
    submit: Callable[[httpx.AsyncClient, dict[str, str], str], Awaitable[httpx.Response]]
    outcome: Callable[[httpx.AsyncClient, dict[str, str], httpx.Response], Awaitable[Outcome]]


async def _submit_webhook(c: httpx.AsyncClient, h: dict[str, str], url: str) -> httpx.Response:
    return await c.post("/api/webhooks", json={"url": url, "events": ["*"]}, headers=h)


async def _ping(c: httpx.AsyncClient, h: dict[str, str], created: httpx.Response) -> Outcome:
    assert created.status_code == 201, created.text
    hook_id = created.json()["webhook"]["id"]
    ping = (await c.post(f"/api/webhooks/{hook_id}/ping", headers=h)).json()["ping"]
    error = ping["error"] or f"HTTP {ping['status_code']}"
    return Outcome(bool(ping["delivered"]), error)


async def _submit_compact(c: httpx.AsyncClient, h: dict[str, str], url: str) -> httpx.Response:
    return await c.post("/api/compact", json={"asset_url": url}, headers=h)


async def _compacted(c: httpx.AsyncClient, h: dict[str, str], queued: httpx.Response) -> Outcome:
    assert queued.status_code == 202, queued.text
    cid = queued.json()["compact_id"]
    for _ in range(600):
        body = (await c.get(f"/api/compact/{cid}", headers=h)).json()
        if body["status"] in ("succeeded", "failed"):
            error = body["error"] or {}
            return Outcome(
                body["status"] == "succeeded", f"{error.get('code')}: {error.get('message')}"
            )
        await asyncio.sleep(0.1)
    raise AssertionError(f"compaction {cid} did not finish")


async def _submit_feed(c: httpx.AsyncClient, h: dict[str, str], url: str) -> httpx.Response:
    body = {"url": url, "source": "ssrf-suite"}
    return await c.post("/api/eshield/threats/import", json=body, headers=h)


async def _imported(c: httpx.AsyncClient, h: dict[str, str], queued: httpx.Response) -> Outcome:
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["job_id"]
    for _ in range(600):
        job = (await c.get(f"/api/jobs/{job_id}", headers=h)).json()["job"]
        if job["status"] in ("succeeded", "failed"):
            return Outcome(job["status"] == "succeeded", str(job["error"]))
        await asyncio.sleep(0.05)
    raise AssertionError(f"feed job {job_id} did not finish")


WEBHOOKS = Feature("webhooks", "/hook", _submit_webhook, _ping)
COMPACT = Feature("compact", "/asset.png", _submit_compact, _compacted)
FEEDS = Feature("feeds", "/feed.txt", _submit_feed, _imported)
FEATURES = [WEBHOOKS, COMPACT, FEEDS]
FOLLOWING = [COMPACT, FEEDS]  # these follow (re-checked) redirects; webhooks follow none


async def _write(make_key: KeyFactory) -> dict[str, str]:
    return auth(await make_key("write"))


async def fingerprint(database: Database) -> tuple[int, ...]:
    """Row counts a refused request must leave unchanged."""
    async with database.session() as session:
        counts = []
        for model in (WebhookEndpoint, CompactAsset, Job, AuditEntry):
            counts.append(int(await session.scalar(select(func.count()).select_from(model)) or 0))
    return tuple(counts)


def refusal_problem(response: httpx.Response) -> str | None:
    if response.status_code != 400:
        return f"status {response.status_code}: {response.text[:200]}"
    body = response.json()
    if body.get("success") is not False or not body.get("message"):
        return f"not the error shape: {body}"
    if body.get("code") not in ("SSRF_BLOCKED", "URL_INVALID", "VALIDATION_ERROR"):
        return f"code {body.get('code')}"
    return None


# --------------------------------------------------------------------------- refused at submit


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
async def test_every_refused_url_is_refused_at_submit(
    feature: Feature,
    client: httpx.AsyncClient,
    make_key: KeyFactory,
    database: Database,
    netguard: tuple[FakeDns, Egress],
) -> None:
    dns, egress = netguard
    headers = await _write(make_key)
    before = await fingerprint(database)
    problems = []
    for url in REFUSED_URLS:
        problem = refusal_problem(await feature.submit(client, headers, url))
        if problem:
            problems.append(f"{url!r}: {problem}")
    assert problems == []
    assert await fingerprint(database) == before  # nothing stored, queued or audited
    assert dns.lookups == [] and egress.attempts == []


async def test_webhook_update_refuses_every_refused_url(
    client: httpx.AsyncClient, make_key: KeyFactory, servers: Any, netguard: Any
) -> None:
    allowed, _forbidden = servers
    dns, egress = netguard
    headers = await _write(make_key)
    created = await _submit_webhook(client, headers, allowed.base + "/hook")
    hook = created.json()["webhook"]
    problems = []
    for url in REFUSED_URLS:
        response = await client.patch(
            f"/api/webhooks/{hook['id']}", json={"url": url}, headers=headers
        )
        if problem := refusal_problem(response):
            problems.append(f"{url!r}: {problem}")
    assert problems == []
    current = (await client.get(f"/api/webhooks/{hook['id']}", headers=headers)).json()
    assert current["webhook"]["url"] == hook["url"]
    assert dns.lookups == [] and egress.attempts == []


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
async def test_positive_control_the_allowlisted_server_is_fetched(
    feature: Feature, client: httpx.AsyncClient, make_key: KeyFactory, servers: Any
) -> None:
    allowed, forbidden = servers
    headers = await _write(make_key)
    outcome = await feature.outcome(
        client, headers, await feature.submit(client, headers, allowed.base + feature.path)
    )
    assert outcome.fetched, outcome.error
    assert allowed.hits[-1].endswith(feature.path) and forbidden.hits == []


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("feature", FOLLOWING, ids=lambda f: f.name)
async def test_redirects_to_refused_targets_are_refused_at_each_hop(
    feature: Feature,
    client: httpx.AsyncClient,
    make_key: KeyFactory,
    servers: Any,
    netguard: tuple[FakeDns, Egress],
    allow: Callable[..., None],
) -> None:
    allowed, forbidden = servers
    _dns, egress = netguard
    install_redirects(allowed, forbidden, feature.path)
    headers = await _write(make_key)

    async def fetch(route: str) -> Outcome:
        queued = await feature.submit(client, headers, allowed.base + route)
        return await feature.outcome(client, headers, queued)

    for route, location in refused_hops(forbidden, feature.path).items():
        outcome = await fetch(route)
        assert not outcome.fetched and guard_message(location) in outcome.error, (route, outcome)
    loop = await fetch("/loop")
    assert not loop.fetched and "HTTP 302" in loop.error  # the hop limit ends a loop
    assert allowed.hits.count("GET /loop") == 4  # the first request and three hops
    assert (await fetch("/to-self")).fetched  # positive control: an allowed hop is followed
    assert forbidden.hits == [] and egress.attempts == []
    allow(ALLOWED, FORBIDDEN)  # ...and with 127.0.0.2 listed, the same redirect reaches it
    assert (await fetch("/to-forbidden")).fetched and forbidden.hits == [f"GET {feature.path}"]


async def test_webhooks_follow_no_redirect(
    client: httpx.AsyncClient, make_key: KeyFactory, servers: Any, netguard: Any
) -> None:
    allowed, forbidden = servers
    install_redirects(allowed, forbidden, "/hook")
    headers = await _write(make_key)
    for route in [*refused_hops(forbidden, "/hook"), "/loop"]:
        outcome = await _ping(
            client, headers, await _submit_webhook(client, headers, allowed.base + route)
        )
        assert not outcome.fetched and "HTTP 302" in outcome.error, (route, outcome)
    assert forbidden.hits == [] and netguard[1].attempts == []


# --------------------------------------------------------------------------- DNS rebinding


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
async def test_a_name_rebound_after_registration_is_refused_when_fetched(
    feature: Feature,
    client: httpx.AsyncClient,
    make_key: KeyFactory,
    tls_servers: Any,
    netguard: tuple[FakeDns, Egress],
    allow: Callable[..., None],
) -> None:
    allowed, forbidden = tls_servers
    dns, egress = netguard
    name = {"webhooks": NAMES[0], "compact": NAMES[1], "feeds": NAMES[2]}[feature.name]
    url = f"https://{name}:{allowed.port}{feature.path}"
    headers = await _write(make_key)

    async def fetch() -> Outcome:
        return await feature.outcome(client, headers, await feature.submit(client, headers, url))

    dns.set(name, [ALLOWED])
    assert (await fetch()).fetched  # positive control: the name answers the allowed server
    for answer in ([FORBIDDEN], [ALLOWED, FORBIDDEN], ["169.254.169.254"], ["::ffff:127.0.0.2"]):
        dns.set(name, answer)
        outcome = await fetch()
        assert not outcome.fetched and "non-public address" in outcome.error, (answer, outcome)
    assert forbidden.hits == [] and egress.attempts == []
    allow(ALLOWED, FORBIDDEN)
    dns.set(name, [FORBIDDEN])
    assert (await fetch()).fetched and len(forbidden.hits) == 1  # the refused server is live


async def test_webhook_delivery_after_rebinding_is_refused_and_logged(
    client: httpx.AsyncClient,
    make_key: KeyFactory,
    tls_servers: Any,
    netguard: tuple[FakeDns, Egress],
) -> None:
    """The dispatcher's own steps (fan out, claim, attempt) on real events, a rebound name."""
    allowed, forbidden = tls_servers
    dns, egress = netguard
    headers = await _write(make_key)
    dns.set(NAMES[0], [ALLOWED])
    url = f"https://{NAMES[0]}:{allowed.port}/hook"
    hook_id = (await _submit_webhook(client, headers, url)).json()["webhook"]["id"]
    delivered = await _deliver_event(hook_id, n=1)
    assert delivered and all(o.delivered for o in delivered), delivered  # positive control
    assert "POST /hook" in allowed.hits

    dns.set(NAMES[0], [FORBIDDEN])
    refused = await _deliver_event(hook_id, n=2)
    assert refused and not any(o.delivered for o in refused)
    assert all(o.error and o.error.startswith("SSRF_BLOCKED") for o in refused), refused
    listed = await client.get(f"/api/webhooks/{hook_id}/deliveries", headers=headers)
    assert "SSRF_BLOCKED" in listed.json()["deliveries"][0]["last_error"]
    assert forbidden.hits == [] and egress.attempts == []


async def _deliver_event(hook_id: int, *, n: int) -> list[AttemptOutcome]:
    """Record an event, fan it out and attempt this endpoint's due deliveries once."""
    await ledger.record("site_updated", actor="test", target="site:0", params={"n": n})
    head = (await ledger.entries_after(0, limit=1_000_000))[-1]["seq"]
    while await read_cursor() < head:
        await fan_out_once()
    outcomes = []
    for delivery_id in await claim_due("ssrf-suite", 100):
        outcome = await attempt_delivery(delivery_id, retry=True)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
