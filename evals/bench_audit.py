"""Audit ledger figures: append rate, offline verification, proof sizes and proof latency.

    .venv/bin/python -m evals.bench_audit [--appends 20000] [--verify 1000000] [--proof-log 100000]

Everything runs on a temporary SQLite database (synchronous=FULL: every commit is durable) and
temporary files; nothing outside the temp dir is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from models import ledger, migrate
from models.db import init_database, utcnow
from models.ledger import merkle, signing, store
from models.ledger.canonical import canonical_json
from models.ledger.verify import EXPORT_FORMAT, verify_export
from models.settings import Settings, configure
from tools import audit


def _draft(i: int) -> store.Draft:
    return store.Draft(
        ts=utcnow(),
        action="command_executed",
        actor=f"key:{i % 7}",
        server_id=i % 50,
        target="web-1",
        params={"command": "systemctl status nginx", "timeout": 30},
        result={"exit_code": 0, "stdout_sha256": hashlib.sha256(str(i).encode()).hexdigest()},
        request_id=f"req-{i:08d}",
    )


async def bench_appends(n: int) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    waves = 10
    for w in range(waves):
        await asyncio.gather(
            *[
                ledger.record(
                    "command_executed",
                    actor="key:1",
                    server_id=i % 50,
                    params={"command": "uptime", "timeout": 30},
                    result={"exit_code": 0},
                    request_id=f"req-{i}",
                )
                for i in range(w * n // waves, (w + 1) * n // waves)
            ]
        )
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"record(): {n} concurrent appends in {elapsed:.2f} s wall = {n / elapsed:,.0f}/s; "
          f"{cpu:.2f} s CPU of this process = {n / cpu:,.0f} per CPU-second")  # fmt: skip


async def build_log(n: int, batch: int = 5000) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    from models.db import get_database

    for start in range(0, n, batch):
        async with get_database().session() as session:
            await store.append(session, [_draft(i) for i in range(start, min(n, start + batch))])
    return time.perf_counter() - t0, time.process_time() - c0


def write_export(path: Path, n: int, signer: signing.Signer) -> None:
    """An export of ``n`` realistic entries, built with the writer's own encoding."""
    frontier, prev = merkle.Frontier(), "0" * 64
    with path.open("wb") as out:
        lines = []
        for i in range(n):
            body = canonical_json(store.entry_document(_draft(i), i, prev))
            leaf = merkle.leaf_hash(body)
            frontier.append(leaf)
            prev = leaf.hex()
            lines.append(body)
        note = signer.sign_checkpoint("bench/log", n, frontier.root())
        header = {
            "format": EXPORT_FORMAT,
            "origin": "bench/log",
            "verifier_key": signer.verifier_key,
            "public_key": "",
            "tree_size": n,
            "checkpoints": [note],
        }
        out.write(orjson.dumps(header) + b"\n")
        out.write(b"\n".join(lines) + b"\n")


def hash_baseline(path: Path) -> tuple[float, float]:
    """CPU seconds to SHA-256 every entry line: (leaf hashes only, leaves plus the tree)."""
    c0 = time.process_time()
    with path.open("rb") as handle:
        handle.readline()
        leaves = [hashlib.sha256(b"\x00" + line.rstrip(b"\n")).digest() for line in handle]
    leaves_only = time.process_time() - c0
    frontier = merkle.Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    frontier.root()
    return leaves_only, time.process_time() - c0


def bench_verify(tmp: Path, n: int, signer: signing.Signer) -> None:
    path = tmp / "export.jsonl"
    t0 = time.perf_counter()
    write_export(path, n, signer)
    size_mb = path.stat().st_size / 1e6
    print(f"export of {n:,} entries written in {time.perf_counter() - t0:.1f} s ({size_mb:.0f} MB)")
    print(f"load average before verifying: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    leaves_cpu, tree_cpu = hash_baseline(path)
    t0, c0 = time.perf_counter(), time.process_time()
    report = verify_export(path)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert report.ok, report.problem
    print(f"offline verify of {n:,} entries: {wall:.2f} s wall, {cpu:.2f} s CPU")
    for label, base in (("leaf hashes only", leaves_cpu), ("leaves + tree", tree_cpu)):
        print(f"  hashlib baseline, {label}: {base:.2f} s CPU, ratio {cpu / base:.2f}x")


def proof_sizes(n: int) -> None:
    rng = random.Random(1)
    inc = max(len(merkle.inclusion_ranges(rng.randrange(n), n)) for _ in range(2000))
    inc = max(inc, len(merkle.inclusion_ranges(n - 1, n)), len(merkle.inclusion_ranges(0, n)))
    con = max(len(merkle.consistency_ranges(rng.randrange(1, n), n)) for _ in range(2000))
    bound = 32 * math.ceil(math.log2(n))
    print(f"proof sizes at n={n:,}: inclusion max {32 * inc} B (bound {bound} B), "
          f"consistency max {32 * con} B (bound {bound + 32} B)")  # fmt: skip


async def bench_proofs(n: int, samples: int = 500) -> None:
    from models.db import get_database

    build_s, build_cpu = await build_log(n)
    print(f"built a {n:,}-entry log with store.append (5000 per transaction) in {build_s:.1f} s "
          f"= {n / build_s:,.0f} appends/s ({n / build_cpu:,.0f} per CPU-second)")  # fmt: skip
    rng = random.Random(2)
    size = await _size()
    for name, call in (
        ("inclusion", lambda s: audit.get_entry_with_proof(s, seq=rng.randrange(size))),
        ("consistency", lambda s: audit.get_consistency(s, from_size=rng.randrange(1, size))),
    ):
        times = []
        async with get_database().session() as session:
            for _ in range(samples):
                t0 = time.perf_counter()
                await call(session)
                times.append(time.perf_counter() - t0)
        times.sort()
        p50, p99 = statistics.median(times), times[int(0.99 * len(times)) - 1]
        print(f"{name} proof at n={size:,}: p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms "
              f"({samples} samples, one SQL query each)")  # fmt: skip


async def _size() -> int:
    from models.db import get_database

    async with get_database().session() as session:
        return (await store.read_head(session)).size


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        configure(Settings(data_dir=tmp, database_url=url, ledger_origin="bench/log"))
        await asyncio.to_thread(migrate.upgrade, url)
        db = init_database(url)
        try:
            await bench_appends(args.appends)
            proof_sizes(10**6)
            await bench_proofs(args.proof_log)
        finally:
            await db.dispose()
        bench_verify(tmp, args.verify, signing.load_signer(tmp / "ledger.key", "bench/log"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--verify", type=int, default=1_000_000)
    parser.add_argument("--proof-log", type=int, default=100_000)
    asyncio.run(main(parser.parse_args()))
