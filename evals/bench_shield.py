"""VaultShield figures: rule decisions per second and p99 per decision, and proxy throughput.

    .venv/bin/python evals/bench_shield.py [--decisions N] [--requests N] [--proxy-rules N]

1. The decision engine with 100,000 CIDR rules plus 1,000 other rules (user-agent substrings
   and regexes, geo, keyed rate limits), against the same engine with 10 rules; one core.
   Goals: >= 20,000 decisions/s, p99 <= 50 us, large/small time ratio <= 1.5.
2. Rule propagation: seconds from ``publish_rules_changed`` to a running proxy (polling the
   database, no Redis) answering with the new rule, and the proxy's reload time for 101k rules.
3. Proxy throughput: requests/s through ``execflow shield`` (with the 101k rules loaded)
   against the same upstream hit directly, same run, ratio printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import execflow_env, free_port  # noqa: E402
from tools.vaultshield.engine import Engine, Rule  # noqa: E402
from tools.vaultshield.ratelimit import RateLimiter  # noqa: E402

UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 Version/17.2 Safari",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "sqlmap/1.8#stable (https://sqlmap.org)",
]
COUNTRIES = ["US", "DE", "FR", "CN", "RU", "BR", "IN", "JP", "GB", "NL"]
GEO_CODES = [
    "KP",
    "IR",
    "SY",
    "CU",
    "BY",
    "VE",
    "MM",
    "AF",
    "IQ",
    "LY",
    "SD",
    "SO",
    "YE",
    "ZW",
    "CN",
    "RU",
    "BR",
    "IN",
    "NG",
    "PK",
]


def cidr_rules(count: int, rng: random.Random) -> list[Rule]:
    """``count`` distinct /16-/32 networks spread over unicast IPv4 space, priorities mixed."""
    rules: list[Rule] = []
    seen: set[tuple[int, int]] = set()
    while len(rules) < count:
        prefix = rng.choice((16, 20, 24, 24, 24, 28, 32, 32))
        number = rng.getrandbits(32) & ~((1 << (32 - prefix)) - 1)
        if (number >> 24) in (0, 10, 127) or number >> 28 >= 14 or (number, prefix) in seen:
            continue
        seen.add((number, prefix))
        value = f"{socket.inet_ntoa(number.to_bytes(4, 'big'))}/{prefix}"
        rules.append(Rule(len(rules) + 1, "ip_block", value, priority=rng.randint(1, 1000)))
    return rules


def other_rules(count: int, start: int, rng: random.Random) -> list[Rule]:
    """60% user-agent substrings, 10% regexes, 20 geo rules, the rest keyed rate limits."""
    rules: list[Rule] = []
    geo = iter(GEO_CODES)
    for i in range(count):
        rid, kind = start + i, i % 10
        if kind < 6:
            value = f"badbot-{i:05d}"
            rules.append(Rule(rid, "user_agent_block", value, priority=rng.randint(1, 1000)))
        elif kind == 6:
            rules.append(Rule(rid, "user_agent_block", f"/scanner-{i}[0-9]+/", priority=500))
        elif kind == 7 and (code := next(geo, None)) is not None:
            rules.append(Rule(rid, "geo_block", code, action="log"))
        else:
            net = socket.inet_ntoa(rng.getrandbits(24).to_bytes(3, "big") + b"\x00")
            rules.append(Rule(rid, "rate_limit", f"{net}/24 100000/min", priority=700))
    return rules


def country_lookup(ip: str) -> str | None:
    return COUNTRIES[hash(ip) % len(COUNTRIES)]


def traffic(rules: list[Rule], rng: random.Random) -> tuple[list[str], list[str]]:
    """4,096 random addresses plus 1,024 that hit a CIDR rule of ``rules``; user agents."""
    ips = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(4096)]
    ips += [r.value.split("/")[0] for r in rules if r.type == "ip_block"][:1024]
    return ips, [rng.choice(UAS) for _ in range(len(ips))]


def bench_engine(
    rules: list[Rule], decisions: int, ips: list[str], uas: list[str]
) -> dict[str, float]:
    started = time.perf_counter()
    engine = Engine(rules, country_of=country_lookup, limiter=RateLimiter())
    build = time.perf_counter() - started
    gc.freeze()  # as the proxy does after each reload
    n = len(ips)
    decide = engine.decide
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(decisions):
        decide(ips[i % n], uas[i % n])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    walls, cpus = [], []
    wall_ns, cpu_ns = time.perf_counter_ns, time.thread_time_ns
    for i in range(min(decisions, 50_000)):
        w0, c0 = wall_ns(), cpu_ns()
        decide(ips[i % n], uas[i % n])
        c1, w1 = cpu_ns(), wall_ns()
        walls.append(w1 - w0)
        cpus.append(c1 - c0)
    walls.sort()
    cpus.sort()
    p99 = int(len(walls) * 0.99)
    return {
        "rules": len(rules),
        "build_s": build,
        "per_s_wall": decisions / wall,
        "per_s_cpu": decisions / cpu,
        "mean_cpu_us": cpu / decisions * 1e6,
        "p50_us": walls[len(walls) // 2] / 1000,
        "p99_us": walls[p99] / 1000,
        "p99_cpu_us": cpus[p99] / 1000,
    }


UPSTREAM_APP = """
import uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b"x" * 1024
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"1024")]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=%d, log_level="warning", access_log=False)
"""


def wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


async def hammer(base: str, requests: int, concurrency: int = 16) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                queue.pop()
                response = await client.get("/item")
                assert response.status_code == 200, response.status_code

        await hammer_warmup(client)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


async def hammer_warmup(client: httpx.AsyncClient) -> None:
    for _ in range(20):
        await client.get("/item")


async def setup_db(url: str, rules: list[Rule], upstream: str) -> int:
    from sqlalchemy import insert

    from models.db import init_database, utcnow
    from models.traffic import VaultShieldRule
    from tools.sites import create_site

    db = init_database(url)
    async with db.session() as session:
        site = await create_site(
            session,
            fields={"name": "bench", "url": "https://bench.example", "upstream_url": upstream},
            actor="bench",
        )
        rows = [
            {
                "type": r.type,
                "value": r.value,
                "action": r.action,
                "priority": r.priority,
                "created_by": "bench",
                "created_at": utcnow(),
            }
            for r in rules
        ]
        await session.execute(insert(VaultShieldRule), rows)
    return int(site["id"])


async def propagation(base: str, rounds: int = 5) -> list[float]:
    from models.db import get_database
    from models.traffic import VaultShieldRule
    from tools.vaultshield import publish_rules_changed

    times = []
    transport = httpx.AsyncHTTPTransport(local_address="127.0.40.1")
    async with httpx.AsyncClient(base_url=base, transport=transport, timeout=30) as client:
        for i in range(rounds):
            action = "block" if i % 2 == 0 else "log"
            async with get_database().session() as session:
                session.add(
                    VaultShieldRule(
                        type="ip_block",
                        value="127.0.40.0/24",
                        action=action,
                        priority=1,
                        created_by="bench",
                    )
                )
            want = 403 if action == "block" else 200
            if action == "log":  # remove the earlier block so the log rule lets traffic through
                from sqlalchemy import delete

                async with get_database().session() as session:
                    await session.execute(
                        delete(VaultShieldRule).where(
                            VaultShieldRule.action == "block",
                            VaultShieldRule.value == "127.0.40.0/24",
                        )
                    )
            started = time.perf_counter()
            await publish_rules_changed()
            for _ in range(3000):
                if (await client.get("/item")).status_code == want:
                    break
                await asyncio.sleep(0.005)
            times.append(time.perf_counter() - started)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument(
        "--proxy-rules", type=int, default=101_000, help="rules loaded in the proxy"
    )
    parser.add_argument("--skip-proxy", action="store_true")
    args = parser.parse_args()
    rng = random.Random(7)
    big = cidr_rules(100_000, rng) + other_rules(1000, 100_001, rng)
    small = [
        *cidr_rules(6, random.Random(8)),
        Rule(101, "user_agent_block", "badbot-00001"),
        Rule(102, "user_agent_block", "/scanner-7[0-9]+/", priority=500),
        Rule(103, "geo_block", "CN", action="log"),
        Rule(104, "rate_limit", "203.0.113.0/24 100000/min", priority=700),
    ]
    print("== decision engine (one core, in process)")
    results = {}
    ips, uas = traffic(big, random.Random(11))  # the same requests for both engines
    for name, rules in (("10 rules", small), ("101k rules", big)):
        r = bench_engine(rules, args.decisions, ips, uas)
        results[name] = r
        print(
            f"{name:>11}: {r['per_s_cpu']:>9,.0f} decisions per CPU-second "
            f"({r['per_s_wall']:,.0f}/s wall)  p50 {r['p50_us']:.1f} us  "
            f"p99 {r['p99_us']:.1f} us wall, {r['p99_cpu_us']:.1f} us CPU  "
            f"(compile {r['build_s']:.2f} s)"
        )
    ratio = results["101k rules"]["mean_cpu_us"] / results["10 rules"]["mean_cpu_us"]
    print(f"  large/small CPU time per decision: {ratio:.2f}x (goal <= 1.5x)")
    print(f"  load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.skip_proxy:
        return

    from models import migrate
    from models.settings import Settings, configure

    tmp = Path(tempfile.mkdtemp(prefix="bench-shield-"))
    url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    configure(Settings(data_dir=tmp, database_url=url))
    up_port, px_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    proxy_rules = big[-args.proxy_rules :]  # the 1,000 other rules, then CIDRs
    site_id = await setup_db(url, proxy_rules, upstream)
    upstream_cmd = [sys.executable, "-c", UPSTREAM_APP % up_port]
    procs = [subprocess.Popen(upstream_cmd)]  # noqa: ASYNC220 - a harness may block
    env = execflow_env(
        {
            "EXECFLOW_DATABASE_URL": url,
            "EXECFLOW_DATA_DIR": str(tmp),
            "EXECFLOW_LOG_LEVEL": "WARNING",
        }
    )
    started = time.perf_counter()
    procs.append(
        subprocess.Popen(  # noqa: ASYNC220
            [
                sys.executable,
                "-m",
                "api.cli",
                "shield",
                "--site-id",
                str(site_id),
                "--listen",
                f"127.0.0.1:{px_port}",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    )
    try:
        proxy = f"http://127.0.0.1:{px_port}"
        wait(upstream)
        wait(proxy + "/.well-known/vaultshield/ready", timeout=120)
        print("== proxy")
        startup = time.perf_counter() - started
        label = f"{len(proxy_rules):,} rules"
        print(f"  start with {label} (process start, load, compile): {startup:.1f} s")
        direct = await hammer(upstream, args.requests)
        proxied = await hammer(proxy, args.requests)
        print(
            f"  direct  : {direct:,.0f} req/s "
            f"(16 concurrent, 1 KiB bodies, {args.requests} requests)"
        )
        print(f"  proxied : {proxied:,.0f} req/s")
        print(f"  proxied/direct: {proxied / direct:.2f}")
        times = await propagation(proxy)
        print(
            f"  rule change live ({label}, DB polling, overlay recompile): "
            f"median {statistics.median(times):.2f} s, max {max(times):.2f} s "
            f"over {len(times)} changes"
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    asyncio.run(main())
