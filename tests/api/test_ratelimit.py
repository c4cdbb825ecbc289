"""Rate limits: GCRA arithmetic, headers through the API, and exact sharing through Redis."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from api.ratelimit import MemoryLimiter, RedisLimiter, gcra
from tests.conftest import auth
from tests.support.processes import run_cli, serve


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_starter_burst_admitted_then_refused_then_refills() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    decisions = [await limiter.hit("k", 100, 120) for _ in range(121)]
    assert all(d.allowed for d in decisions[:120])
    assert [d.remaining for d in decisions[:3]] == [119, 118, 117]
    assert decisions[119].remaining == 0
    refused = decisions[120]
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after == pytest.approx(0.6)  # one token every 60/100 s
    clock.now += 0.6
    assert (await limiter.hit("k", 100, 120)).allowed
    assert not (await limiter.hit("k", 100, 120)).allowed
    clock.now += 60.0  # a minute refills 100 tokens, not more than capacity
    admitted = sum([(await limiter.hit("k", 100, 120)).allowed for _ in range(130)])
    assert admitted == 100


def test_full_bucket_reset_time() -> None:
    _tat, decision = gcra(0.0, 100.0, 60, 10)
    assert decision.allowed and decision.remaining == 9
    assert decision.reset_at == pytest.approx(101.0)  # full again one interval later
    headers = decision.headers()
    assert headers["X-RateLimit-Limit"] == "10" and headers["X-RateLimit-Remaining"] == "9"
    assert "Retry-After" not in headers


@pytest.fixture
def frozen_limiter(app):
    """The app's limiter on a clock that stands still, so refills never race the test."""
    original = app.state.limiter
    app.state.limiter = MemoryLimiter(Clock())
    yield app.state.limiter
    app.state.limiter = original


async def test_headers_on_every_authenticated_response(
    client: httpx.AsyncClient, make_key, frozen_limiter
) -> None:
    key = await make_key("read", plan="starter")
    first = await client.get("/api/servers", headers=auth(key))
    second = await client.get("/api/servers", headers=auth(key))
    assert first.headers["x-ratelimit-limit"] == "120"
    assert int(first.headers["x-ratelimit-remaining"]) == 119
    assert int(second.headers["x-ratelimit-remaining"]) == 118
    reset = int(first.headers["x-ratelimit-reset"])
    assert reset == 1_000_001  # the frozen clock plus one 0.6 s interval, rounded up
    forbidden = await client.post("/api/keys", headers=auth(key), json={})
    assert forbidden.status_code == 403


async def test_starter_plan_refuses_the_121st_request(
    client: httpx.AsyncClient, make_key, frozen_limiter
) -> None:
    key = await make_key("read", plan="starter")
    statuses = [
        (await client.get("/api/servers", headers=auth(key))).status_code for _ in range(121)
    ]
    assert statuses[:120] == [200] * 120
    assert statuses[120] == 429


async def test_enterprise_without_burst_cap_is_never_refused(
    client: httpx.AsyncClient, make_key
) -> None:
    key = await make_key("read", plan="enterprise", rate_per_minute=10, burst=None)
    statuses = {
        (await client.get("/api/servers", headers=auth(key))).status_code for _ in range(30)
    }
    assert statuses == {200}


async def test_redis_limiter_matches_memory_semantics(redis_url: str, redis_prefix: str) -> None:
    limiter = RedisLimiter(redis_url, redis_prefix)
    try:
        decisions = [await limiter.hit("k", 60, 5) for _ in range(6)]
    finally:
        await limiter.close()
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert 0 < decisions[5].retry_after <= 1.0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_two_api_processes_share_one_bucket_through_redis(
    database_url: str, tmp_path, redis_url: str, redis_prefix: str
) -> None:
    env = {
        "EXECFLOW_DATA_DIR": str(tmp_path),
        "EXECFLOW_DATABASE_URL": database_url,
        "EXECFLOW_REDIS_URL": redis_url,
        "EXECFLOW_REDIS_PREFIX": redis_prefix,
        "EXECFLOW_LOG_LEVEL": "WARNING",
    }
    created = run_cli(
        "keys",
        "create",
        "--name",
        "shared",
        "--scope",
        "read",
        "--plan",
        "enterprise",
        "--rate",
        "120",
        "--burst",
        "10",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]

    async def hammer(base: str, until: float) -> list[int]:
        statuses = []
        async with httpx.AsyncClient(base_url=base, headers=auth(key)) as c:
            while time.monotonic() < until:
                statuses.append((await c.get("/api/servers")).status_code)
        return statuses

    with serve(env, "--no-workers") as a, serve(env, "--no-workers") as b:
        start = time.monotonic()
        until = start + 3.0

        async def both() -> list[list[int]]:
            return await asyncio.gather(hammer(a, until), hammer(b, until))

        results = asyncio.run(both())
        elapsed = time.monotonic() - start
    admitted = sum(s.count(200) for s in results)
    refused = sum(s.count(429) for s in results)
    assert refused > 0 and all(s.count(200) > 0 for s in results)
    assert admitted <= 10 + 120 * elapsed / 60 + 1, (admitted, elapsed)
    assert admitted >= 10
