"""Signing-key rotation: old checkpoints keep verifying through the keyring, new ones are signed
by the new key, the rotation is itself a ledger entry, and an unknown key's checkpoint fails."""

from __future__ import annotations

import asyncio

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from models import ledger as audit_ledger
from models.db import utcnow
from models.ledger import store
from models.ledger.checkpoints import describe, keyring, make_checkpoint, signer, verify_database
from models.ledger.signing import Signer
from models.ledger.store import AuditEntry, CheckpointRow
from models.ledger.verify import read_keyring, verify_consistency, verify_export
from tests.support.processes import run_cli


async def _fill(n: int, tag: str) -> None:
    for i in range(n):
        await audit_ledger.record("command_executed", actor="key:1", params={"tag": tag, "i": i})


async def test_rotate_append_verify_old_and_new(ledger, tmp_path) -> None:
    await _fill(5, "before")
    old_row = await make_checkpoint()
    old_key = signer().verifier_key

    proc = await asyncio.to_thread(run_cli, "audit", "rotate-key", env=ledger.env)
    assert proc.returncode == 0, proc.stderr
    assert f"retired key:  {old_key}" in proc.stdout
    new_key = signer().verifier_key  # this process notices the replaced key file
    assert new_key != old_key and f"current key:  {new_key}" in proc.stdout

    keys = read_keyring(ledger.settings.ledger_keyring_path)
    assert keys == [old_key, new_key]
    assert "PRIVATE" not in ledger.settings.ledger_keyring_path.read_text()
    assert "PRIVATE+KEY" in ledger.settings.ledger_key_path.read_text()

    async with ledger.db.session() as session:
        rotation = (
            await session.execute(
                select(AuditEntry).where(AuditEntry.action == "ledger_key_rotated")
            )
        ).scalar_one()
    assert orjson.loads(rotation.body)["params"] == {"previous_key": old_key, "new_key": new_key}

    await _fill(4, "after")
    new_row = await make_checkpoint()
    ring = keyring()
    assert ring.verify(old_row.note).signer == old_key
    assert ring.verify(new_row.note).signer == new_key
    assert describe(old_row)["verifier_key"] == old_key
    assert describe(new_row)["verifier_key"] == new_key

    async with ledger.db.session() as session:
        report = await verify_database(session)
        proof, old_root, new_root = await store.consistency(
            session, old_row.tree_size, new_row.tree_size
        )
    assert report.ok, report.problem
    assert report.signers == {old_key: 1, new_key: 2}  # the rotation entry has its own
    assert verify_consistency(old_row.tree_size, new_row.tree_size, old_root, new_root, proof)
    assert old_root.hex() == old_row.root_hash and new_root.hex() == new_row.root_hash

    proc = await asyncio.to_thread(run_cli, "audit", "verify", env=ledger.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"signed by {old_key}" in proc.stdout and f"signed by {new_key}" in proc.stdout

    # offline: the export's header carries the keyring; pinning it works, pinning only the
    # new key does not (the old checkpoints were not signed by it)
    path = tmp_path / "audit.jsonl"
    proc = await asyncio.to_thread(run_cli, "audit", "export", str(path), env=ledger.env)
    assert proc.returncode == 0, proc.stderr
    assert verify_export(path).ok
    assert verify_export(path, verifier_key=[old_key, new_key]).ok
    proc = await asyncio.to_thread(
        run_cli,
        "audit",
        "verify",
        "--export",
        str(path),
        "--keyring",
        str(ledger.settings.ledger_keyring_path),
        env={},
    )
    assert proc.returncode == 0 and f"signed by {old_key}" in proc.stdout, proc.stderr
    proc = await asyncio.to_thread(
        run_cli, "audit", "verify", "--export", str(path), "--key", new_key, env={}
    )
    assert proc.returncode == 1 and "signed by no key in the keyring" in proc.stderr

    proc = await asyncio.to_thread(run_cli, "audit", "keys", env=ledger.env)
    assert proc.stdout.splitlines() == [old_key, f"{new_key}  (current)"], proc.stderr


async def test_checkpoint_signed_by_unknown_key_fails(ledger) -> None:
    await _fill(3, "x")
    await make_checkpoint()
    async with ledger.db.session() as session:
        head = await store.read_head(session)
    stranger = Signer(ledger.settings.ledger_origin, Ed25519PrivateKey.generate())
    note = stranger.sign_checkpoint(ledger.settings.ledger_origin, head.size, head.root)
    async with ledger.db.session() as session:
        session.add(
            CheckpointRow(
                tree_size=head.size, root_hash=head.root.hex(), note=note, created_at=utcnow()
            )
        )
    async with ledger.db.session() as session:
        report = await verify_database(session)
    assert not report.ok and "signed by no key in the keyring" in report.problem.reason
    proc = await asyncio.to_thread(run_cli, "audit", "verify", env=ledger.env)
    assert proc.returncode == 1 and "signed by no key in the keyring" in proc.stderr, proc.stdout
