"""Two proxies, one site, Redis pub/sub: a change reaches every running proxy without polling.

The proxies poll the version only every 60 s here, so a change that lands within the bounded
wait came through Redis. The time it took is printed (figures belong to the benchmark).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from models.db import Database
from models.settings import Settings, configure
from tests.traffic.conftest import eventually, shield_process, status_of, visitor
from tools.vaultshield import add_vaultshield_rule
from tools.vaultshield.challenge import VERIFY_PATH, solve


@pytest.fixture(scope="module")
def settings(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Settings:
    prefix = f"eftest{time.time_ns() % 10**10}"
    s = Settings(
        data_dir=tmp_path_factory.mktemp("data"),
        database_url=database_url,
        log_format="text",
        redis_url=redis_url,
        redis_prefix=prefix,
    )
    configure(s)
    return s


@pytest.fixture(scope="module")
async def site_id(database: Database, upstream: str) -> int:
    from tools.sites import create_site

    async with database.session() as session:
        site = await create_site(
            session, fields={"name": "api", "url": "https://api.example"}, actor="test"
        )
    return int(site["id"])


@pytest.fixture(scope="module")
def proxies(settings: Settings, site_id: int, upstream: str) -> Iterator[list[str]]:
    env = {
        "EXECFLOW_REDIS_URL": str(settings.redis_url),
        "EXECFLOW_REDIS_PREFIX": settings.redis_prefix,
        "EXECFLOW_VAULTSHIELD_POLL_SECONDS": "60",
    }
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                shield_process(settings, site_id=site_id, upstream=upstream, env=env)
            )
            for _ in range(2)
        ]


async def test_rule_reaches_every_proxy_over_pubsub(
    database: Database, proxies: list[str], site_id: int
) -> None:
    for base in proxies:
        assert await status_of(base, "127.0.20.1") == 200
    started = time.monotonic()
    async with database.session() as session:
        await add_vaultshield_rule(
            session, type="ip_block", value="127.0.20.0/24", site_id=site_id, actor="test"
        )
    for base in proxies:

        async def blocked(base: str = base) -> bool:
            return await status_of(base, "127.0.20.1") == 403

        await eventually(blocked, timeout=30, interval=0.02)
    print(f"rule live on both proxies {time.monotonic() - started:.3f}s after the API call")


async def test_challenge_answer_single_use_across_proxies(
    database: Database, proxies: list[str], site_id: int
) -> None:
    async with database.session() as session:
        await add_vaultshield_rule(
            session, type="ip_block", value="127.0.21.0/24", action="challenge", actor="test"
        )
    first, second = proxies
    for base in proxies:

        async def challenged(base: str = base) -> bool:
            return await status_of(base, "127.0.21.1") == 403

        await eventually(challenged, timeout=30)
    async with visitor(first, "127.0.21.1") as a, visitor(second, "127.0.21.1") as b:
        page = await a.get("/")
        token = page.text.split('name="token" value="')[1].split('"')[0]
        answer = str(solve(token, int(token.split(".")[1])))
        form: dict[str, Any] = {"token": token, "answer": answer}
        assert (await a.post(VERIFY_PATH, data=form)).status_code == 303
        assert (await b.post(VERIFY_PATH, data=form)).status_code == 403  # used (Redis)
        # the pass cookie from the first proxy is honoured by the second (same secret)
        b.cookies.set("vaultshield_pass", a.cookies["vaultshield_pass"])
        assert (await b.get("/")).status_code == 200
