"""Backup figures: ``db export`` / ``db restore`` rows per second, SQLite -> PostgreSQL.

    .venv/bin/python -m evals.bench_backup [--entries 50000] [--postgres URL]

Builds a ledger of ``--entries`` entries (plus its tree nodes) in a temporary SQLite database,
exports it, restores it into a fresh PostgreSQL database (created and dropped here; default the
test server at 127.0.0.1:5432) and prints wall and CPU time for each step, with the ledger-only
``audit export`` of the same log as the in-run baseline (export/baseline ratio). The last line
is a JSON summary. Restore time includes its full verification (re-hashing every table and
verifying the ledger), which is most of its work.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from api.cli.secrets import import_all_tables
from models import migrate
from models.backup import export_database, restore_database
from models.db import Database, init_database, utcnow
from models.ledger import signing, store
from models.ledger.checkpoints import export as audit_export
from models.ledger.checkpoints import make_checkpoint
from models.settings import Settings, configure

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


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


async def _pg(admin: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _timed() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    return time.perf_counter() - start[0], time.process_time() - start[1]


async def main(entries: int, pg_admin: str) -> None:
    import_all_tables()
    tmp = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    src_url = f"sqlite+aiosqlite:///{tmp / 'src.db'}"
    settings = Settings(data_dir=tmp / "data", database_url=src_url, ledger_origin="bench/log")
    configure(settings)
    signing.reset_cache()
    await asyncio.to_thread(migrate.upgrade, src_url)
    db = init_database(src_url)
    for start in range(0, entries, 5000):
        async with db.session() as session:
            await store.append(
                session, [_draft(i) for i in range(start, min(entries, start + 5000))]
            )
    await make_checkpoint()

    t = _timed()
    await audit_export(tmp / "audit.jsonl")
    base_wall, base_cpu = _since(t)

    t = _timed()
    report = await export_database(db, tmp / "dump.jsonl.gz")
    exp_wall, exp_cpu = _since(t)
    rows = sum(report.tables.values())
    await db.dispose()

    name = f"ef_bench_{uuid.uuid4().hex[:10]}"
    await _pg(pg_admin, f'CREATE DATABASE "{name}"')
    dst_url = pg_admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        await asyncio.to_thread(migrate.upgrade, dst_url)
        dst = Database(dst_url)
        t = _timed()
        restored = await restore_database(dst, tmp / "dump.jsonl.gz")
        res_wall, res_cpu = _since(t)
        await dst.dispose()
    finally:
        await _pg(pg_admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    size = (tmp / "dump.jsonl.gz").stat().st_size
    print(f"ledger entries {entries}, rows in all tables {rows}, dump {size / 1e6:.1f} MB gz")
    print(f"audit export (ledger only, baseline): {base_wall:.2f} s wall, {base_cpu:.2f} s CPU")
    print(
        f"db export (SQLite):       {exp_wall:.2f} s wall, {exp_cpu:.2f} s CPU, "
        f"{rows / exp_wall:,.0f} rows/s; {exp_wall / base_wall:.2f}x the baseline"
    )
    print(
        f"db restore (PostgreSQL):  {res_wall:.2f} s wall, {res_cpu:.2f} s CPU, "
        f"{rows / res_wall:,.0f} rows/s (verified {restored.ledger_size} entries)"
    )
    summary = {
        "entries": entries,
        "rows": rows,
        "dump_bytes": size,
        "baseline_s": round(base_wall, 3),
        "export_s": round(exp_wall, 3),
        "export_rows_s": round(rows / exp_wall),
        "export_vs_baseline": round(exp_wall / base_wall, 2),
        "restore_s": round(res_wall, 3),
        "restore_rows_s": round(rows / res_wall),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(orjson.dumps(summary).decode())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--postgres", default=PG, help="admin URL of a PostgreSQL server")
    args = parser.parse_args()
    asyncio.run(main(args.entries, args.postgres))
