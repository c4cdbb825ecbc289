"""Appending: dense sequence numbers under concurrency (in-process and across processes)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from sqlalchemy import func, select

from models import ledger as audit_ledger
from models.ledger import entries_after, redact
from models.ledger.checkpoints import make_checkpoint, verify_database
from models.ledger.store import AuditEntry
from tests.support.processes import execflow_env

WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from models.db import init_database
    from models.ledger import record

    async def main(url, tag, n):
        db = init_database(url)
        await asyncio.gather(*[
            record("agent_tool_call", actor=f"agent:{tag}", params={"n": i}) for i in range(n)
        ])
        await db.dispose()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_record_returns_committed_seq_and_redacts(ledger) -> None:
    seq = await audit_ledger.record(
        "webhook_created",
        actor="key:1",
        target="https://example.invalid/hook",
        params={"url": "https://example.invalid/hook", "secret": "s3cr3t", "nested": {"Token": 1}},
        result={"ratio": 0.25, "big": 2**70},
        request_id="req-1",
    )
    entry = (await entries_after(seq - 1, limit=1))[0]
    assert entry["seq"] == seq and entry["params"]["secret"] == "[REDACTED]"
    assert entry["params"]["nested"] == {"Token": "[REDACTED]"}
    assert entry["result"] == {"ratio": "0.25", "big": str(2**70)}  # no floats in entries
    assert entry["prev_hash"] == "0" * 64 and "s3cr3t" not in str(entry)
    assert redact({"API_KEY": "x", "list": [{"password": 1}]}) == {
        "API_KEY": "[REDACTED]",
        "list": [{"password": "[REDACTED]"}],
    }


async def test_concurrent_appenders_in_and_across_processes(ledger) -> None:
    in_process = 300
    processes, per_process = 3, 60
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, ledger.url, str(p), str(per_process)],
            env=execflow_env(ledger.env),
        )
        for p in range(processes)
    ]
    seqs = await asyncio.gather(
        *[
            audit_ledger.record("agent_tool_call", actor="agent:main", params={"n": i})
            for i in range(in_process)
        ]
    )
    await make_checkpoint()  # a checkpoint taken mid-flight must still verify
    codes = await asyncio.gather(*[asyncio.to_thread(p.wait, 120) for p in procs])
    assert codes == [0] * processes
    total = in_process + processes * per_process
    assert len(set(seqs)) == in_process
    async with ledger.db.session() as session:
        stored = list(
            (await session.execute(select(AuditEntry.seq).order_by(AuditEntry.seq))).scalars()
        )
        assert stored == list(range(total))  # dense, gap-free
        assert (
            await session.execute(select(func.count()).select_from(AuditEntry))
        ).scalar() == total
    # Forced: on a fast machine the appender processes may all have finished before the
    # mid-flight checkpoint, which then already covers the whole log.
    await make_checkpoint(force=True)
    async with ledger.db.session() as session:
        report = await verify_database(session)
    assert report.ok and report.tree_size == total and report.checkpoints >= 2, report.problem
