"""The shipped deploy/nginx.conf in front of two real `execflow serve` replicas on PostgreSQL and
Redis: requests are balanced across both, X-Request-ID passes through, X-Forwarded-For cannot
be spoofed, nginx's own errors keep the error shape, per-key rate limits hold across replicas,
and a stopped replica is routed around.

PostgreSQL only: several replicas on one SQLite file is not a supported layout.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from models.db import init_database
from models.settings import Settings
from tests.conftest import REDIS_URL, create_database
from tests.support.keys import limited_read_key, unlimited_admin_key
from tests.support.nginx import MISSING, NGINX, SHIPPED, nginx_config, run_nginx
from tests.support.processes import free_port, json_log_records, serve

pytestmark = pytest.mark.skipif(NGINX is None, reason=MISSING)
RATE, BURST = 60, 5  # the rate-limited key: 60/min (one a second), bursts of 5


def _request_records(path: Path) -> list[dict]:
    return [r for r in json_log_records(path) if r.get("msg") == "request"]


def _error_shaped(response: httpx.Response) -> None:
    body = response.json()
    assert body["success"] is False and body["message"] and body["code"], body


def test_shipped_body_limit_matches_the_api_default() -> None:
    match = re.search(r"client_max_body_size (\d+)([km]?);", SHIPPED.read_text())
    assert match is not None
    size = int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2)]
    assert size == Settings.model_fields["max_body_bytes"].default


async def _setup_keys(url: str) -> tuple[str, str, int]:
    db = init_database(url)
    try:
        limited, limited_id = await limited_read_key(db, rate=RATE, burst=BURST)
        return await unlimited_admin_key(db, name="lb"), limited, limited_id
    finally:
        await db.dispose()


def test_two_replicas_behind_nginx(tmp_path: Path) -> None:
    url, drop = asyncio.run(create_database("postgres", tmp_path))
    try:
        open_key, limited, limited_id = asyncio.run(_setup_keys(url))
        _run_cluster(tmp_path, url, open_key, limited, limited_id)
    finally:
        asyncio.run(drop())


def _run_cluster(tmp: Path, url: str, open_key: str, limited: str, limited_id: int) -> None:
    prefix = f"efng{uuid.uuid4().hex[:10]}"
    ports = [free_port(), free_port()]
    logs = [tmp / f"replica{i}" / f"serve-{p}.log" for i, p in enumerate(ports)]
    with ExitStack() as replicas:
        for i, port in enumerate(ports):
            env = {
                "EXECFLOW_DATA_DIR": str(tmp / f"replica{i}"),
                "EXECFLOW_DATABASE_URL": url,
                "EXECFLOW_REDIS_URL": REDIS_URL,
                "EXECFLOW_REDIS_PREFIX": prefix,
                "EXECFLOW_LOG_FORMAT": "json",
            }
            (tmp / f"replica{i}").mkdir()
            replicas.enter_context(serve(env, port=port))
        edge = free_port()
        with run_nginx(tmp / "nginx", nginx_config(edge, ports)) as base:
            with httpx.Client(base_url=base, timeout=30) as c:
                _balanced_with_request_ids(c, open_key, logs)
                _nginx_errors_keep_the_shape(c, open_key)
                _rate_limit_holds_across_replicas(c, limited, limited_id, logs)
                replicas.close()  # stop both replicas ... then bring one back
            with ExitStack() as one:
                env = {
                    "EXECFLOW_DATA_DIR": str(tmp / "replica0"),
                    "EXECFLOW_DATABASE_URL": url,
                    "EXECFLOW_REDIS_URL": REDIS_URL,
                    "EXECFLOW_REDIS_PREFIX": prefix,
                    "EXECFLOW_LOG_FORMAT": "json",
                }
                with httpx.Client(base_url=base, timeout=30) as c:
                    down = c.get("/api/servers", headers={"Authorization": f"Bearer {open_key}"})
                    assert down.status_code == 503
                    _error_shaped(down)
                    one.enter_context(serve(env, port=ports[0]))
                    statuses = [
                        c.get(
                            "/api/servers", headers={"Authorization": f"Bearer {open_key}"}
                        ).status_code
                        for _ in range(10)
                    ]
                    # One replica is down: nginx routes every request to the live one.
                    assert statuses == [200] * 10, statuses


def _balanced_with_request_ids(c: httpx.Client, key: str, logs: list[Path]) -> None:
    sent = [f"lb-{i}-{uuid.uuid4().hex[:8]}" for i in range(40)]
    for rid in sent:
        r = c.get(
            "/api/servers",
            headers={
                "Authorization": f"Bearer {key}",
                "X-Request-ID": rid,
                "X-Forwarded-For": "203.0.113.9",  # a spoofing attempt
            },
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == rid
    generated = c.get("/api/servers", headers={"Authorization": f"Bearer {key}"})
    nginx_rid = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", nginx_rid)
    time.sleep(0.5)
    per_replica = [
        [r for r in _request_records(p) if r["request_id"].startswith("lb-")] for p in logs
    ]
    seen = [r["request_id"] for recs in per_replica for r in recs]
    assert sorted(seen) == sorted(sent), "every request reached exactly one replica"
    counts = [len(recs) for recs in per_replica]
    assert min(counts) >= 10, f"requests not balanced across replicas: {counts}"
    clients = {r["client"] for recs in per_replica for r in recs}
    assert clients == {"127.0.0.1"}, f"X-Forwarded-For was spoofable: {clients}"
    assert any(r["request_id"] == nginx_rid for p in logs for r in _request_records(p)), (
        "nginx's generated request id did not reach the replica"
    )


def _nginx_errors_keep_the_shape(c: httpx.Client, key: str) -> None:
    big = c.post(
        "/api/keys",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
    )
    assert big.status_code == 413
    _error_shaped(big)
    assert big.headers.get("x-request-id")


def _rate_limit_holds_across_replicas(
    c: httpx.Client, key: str, key_id: int, logs: list[Path]
) -> None:
    statuses = []
    started = time.monotonic()
    for _ in range(30):
        r = c.get("/api/servers", headers={"Authorization": f"Bearer {key}"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            _error_shaped(r)
            assert int(r.headers["retry-after"]) >= 1
    elapsed = time.monotonic() - started
    allowed = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    # GCRA shared in Redis: at most the burst plus what the rate refilled meanwhile (+1 for the
    # refill straddling the first and last request), however nginx spread the requests.
    assert BURST <= allowed <= BURST + int(RATE * elapsed / 60) + 1, (allowed, elapsed)
    time.sleep(0.5)
    served_by = [sum(1 for r in _request_records(p) if r.get("key_id") == key_id) for p in logs]
    assert all(n > 0 for n in served_by), f"the limited key hit one replica only: {served_by}"
