"""Tampering with the stored log, with the triggers bypassed, is caught and located.

Each test builds a fresh log, plays an attacker with full database access, then runs
``execflow audit verify`` (a separate process, the way an operator would) and checks that it
fails naming the first bad sequence number.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from models import ledger as audit_ledger
from models.ledger import merkle
from models.ledger.canonical import canonical_json
from models.ledger.checkpoints import make_checkpoint, signer, verify_database
from tests.support.processes import run_cli

SIZE = 20


async def _fill(n: int = SIZE, start: int = 0) -> None:
    for i in range(start, start + n):
        await audit_ledger.record(
            "command_executed", actor=f"key:{i % 3}", server_id=i % 4, params={"i": i}
        )


async def _bodies(ledger) -> list[str]:
    async with ledger.db.engine.connect() as conn:
        rows = await conn.execute(text("SELECT body FROM audit_log ORDER BY seq"))
        return [r[0] for r in rows]


def _cli_verify(ledger, *args: str) -> tuple[int, str]:
    proc = run_cli("audit", "verify", *args, env=ledger.env)
    return proc.returncode, proc.stdout + proc.stderr


async def _assert_caught(ledger, seq: int) -> None:
    async with ledger.db.session() as session:
        report = await verify_database(session)
    assert report.problem is not None and report.problem.seq == seq, report.problem
    code, output = await asyncio.to_thread(_cli_verify, ledger)
    assert code == 1 and f"FAILED at seq {seq}:" in output, output


async def test_untouched_log_verifies(ledger) -> None:
    await _fill()
    await make_checkpoint()
    code, output = await asyncio.to_thread(_cli_verify, ledger)
    assert code == 0 and f"OK: {SIZE} entries" in output, output


async def test_triggers_refuse_update_delete_truncate(ledger) -> None:
    await _fill(3)
    await make_checkpoint()
    statements = [
        "UPDATE audit_log SET actor = 'x' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "UPDATE audit_tree SET hash = hash WHERE level = 0",
        "DELETE FROM audit_tree",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_checkpoints SET note = 'x'",
        "DELETE FROM audit_head",
    ]
    if ledger.db.dialect == "postgresql":
        statements += [f"TRUNCATE {t}" for t in ("audit_log", "audit_tree", "audit_checkpoints")]
    for statement in statements:
        with pytest.raises(DBAPIError, match=r"append-only|cannot be deleted"):
            await ledger.sql(statement)
    async with ledger.db.session() as session:
        assert (await verify_database(session)).ok


async def test_flipped_byte_in_body(ledger) -> None:
    await _fill()
    await ledger.bypass_triggers()
    body = (await _bodies(ledger))[7]
    await ledger.sql(
        "UPDATE audit_log SET body = :b WHERE seq = 7", b=body.replace("key:1", "key:9")
    )
    await _assert_caught(ledger, 7)


async def test_flipped_column(ledger) -> None:
    await _fill()
    await ledger.bypass_triggers()
    await ledger.sql("UPDATE audit_log SET action = 'playbook_run' WHERE seq = 3")
    await _assert_caught(ledger, 3)


async def test_deleted_row(ledger) -> None:
    await _fill()
    await ledger.bypass_triggers()
    await ledger.sql("DELETE FROM audit_log WHERE seq = 5")
    await _assert_caught(ledger, 5)


async def test_reordered_rows(ledger) -> None:
    await _fill()
    await ledger.bypass_triggers()
    await ledger.sql("UPDATE audit_log SET seq = -1 WHERE seq = 4")
    await ledger.sql("UPDATE audit_log SET seq = 4 WHERE seq = 9")
    await ledger.sql("UPDATE audit_log SET seq = 9 WHERE seq = -1")
    await _assert_caught(ledger, 4)


async def _forge_row(ledger, seq: int, prev_hash: str) -> None:
    entry = orjson.loads((await _bodies(ledger))[0])
    entry.update(seq=seq, prev_hash=prev_hash, actor="key:forged")
    body = canonical_json(entry)
    await ledger.sql(
        "INSERT INTO audit_log (seq, ts, action, actor, server_id, target, params, result, "
        "request_id, prev_hash, entry_hash, body) SELECT :seq, ts, action, 'key:forged', "
        "server_id, target, params, result, request_id, :prev, :leaf, :body "
        "FROM audit_log WHERE seq = 0",
        seq=seq,
        prev=prev_hash,
        leaf=merkle.leaf_hash(body).hex(),
        body=body.decode(),
    )


async def test_inserted_row_in_the_middle(ledger) -> None:
    await _fill()
    await ledger.bypass_triggers()
    bodies = await _bodies(ledger)
    await ledger.sql("UPDATE audit_log SET seq = -seq - 100 WHERE seq >= 6")
    await ledger.sql("UPDATE audit_log SET seq = -seq - 99 WHERE seq < 0")
    await _forge_row(ledger, 6, merkle.leaf_hash(bodies[5].encode()).hex())
    await _assert_caught(ledger, 6)


async def test_row_appended_around_the_writer(ledger) -> None:
    await _fill()
    await ledger.bypass_triggers()
    last = (await _bodies(ledger))[-1]
    await _forge_row(ledger, SIZE, merkle.leaf_hash(last.encode()).hex())
    await _assert_caught(ledger, SIZE)


async def test_rolled_back_log(ledger) -> None:
    """The attacker removes the last entries and rewinds the tree and head consistently; the
    checkpoint signed before the rollback still names the missing entries."""
    await _fill()
    await make_checkpoint()
    await ledger.bypass_triggers()
    keep = 15
    leaves = [merkle.leaf_hash(b.encode()) for b in await _bodies(ledger)]
    frontier = merkle.Frontier()
    kept_nodes = {(lv, i) for leaf in leaves[:keep] for lv, i, _ in frontier.append(leaf)}
    await ledger.sql("DELETE FROM audit_log WHERE seq >= :k", k=keep)
    full = merkle.Frontier()
    for leaf in leaves:
        for level, idx, _ in full.append(leaf):
            if (level, idx) not in kept_nodes:
                await ledger.sql(
                    "DELETE FROM audit_tree WHERE level = :l AND idx = :i", l=level, i=idx
                )
    async with ledger.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE audit_head SET size = :s, frontier = :f, last_hash = :h"),
            {"s": keep, "f": frontier.pack(), "h": leaves[keep - 1].hex()},
        )
    await _assert_caught(ledger, keep)


async def test_forked_checkpoint(ledger) -> None:
    """A checkpoint signed (with the real key) over a different history: the log is good up to
    the last checkpoint it matches, and verification fails from there."""
    await _fill(10)
    await make_checkpoint()
    await _fill(10, start=10)
    leaves = [merkle.leaf_hash(b.encode()) for b in await _bodies(ledger)]
    leaves[12] = merkle.leaf_hash(b"an alternative history")
    fork = merkle.Frontier()
    for leaf in leaves:
        fork.append(leaf)
    note = signer().sign_checkpoint("test/log", SIZE, fork.root())
    async with ledger.db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO audit_checkpoints (tree_size, root_hash, note, created_at) "
                "VALUES (:s, :r, :n, CURRENT_TIMESTAMP)"
            ),
            {"s": SIZE, "r": fork.root().hex(), "n": note},
        )
    await _assert_caught(ledger, 10)
