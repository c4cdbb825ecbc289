"""``execflow db export`` / ``restore``: SQLite -> PostgreSQL and back, across key rotations,
with the ledger verifying and continuing; bad dumps and busy targets are refused with nothing
restored."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from sqlalchemy import JSON, func, insert, null, select, text

from api.cli.secrets import import_all_tables
from api.keys import create_api_key
from compaction.store import CompactAsset
from models import crypto
from models import ledger as audit_ledger
from models.backup import tables
from models.db import Database, init_database
from models.ledger import signing, store
from models.ledger.checkpoints import make_checkpoint, rotate_key
from models.ledger.verify import Keyring, verify_consistency
from models.servers import Server
from models.settings import Settings, configure
from tests.conftest import create_database
from tests.support.processes import run_cli
from tools.servers import create_server

PASSWORD = "hunter2-correct-horse-battery"  # must never appear in a dump

import_all_tables()


@dataclass
class Site:
    """One database and the settings (shared data dir: same keys) that point at it."""

    url: str
    settings: Settings

    @property
    def env(self) -> dict[str, str]:
        return {
            "EXECFLOW_DATABASE_URL": self.url,
            "EXECFLOW_DATA_DIR": str(self.settings.data_dir),
            "EXECFLOW_LOG_FORMAT": "text",
            "EXECFLOW_LEDGER_ORIGIN": self.settings.ledger_origin,
        }

    def use(self) -> Database:
        configure(self.settings)
        signing.reset_cache()
        crypto.reset_cache()
        return init_database(self.url)


@pytest.fixture
async def make_site(tmp_path: Path) -> AsyncIterator:
    drops = []

    async def make(backend: str, data_dir: Path | None = None) -> Site:
        url, drop = await create_database(backend, tmp_path)
        drops.append(drop)
        settings = Settings(
            data_dir=data_dir or tmp_path / "data",
            database_url=url,
            log_format="text",
            ledger_origin="test/log",
        )
        return Site(url, settings)

    yield make
    for drop in drops:
        await drop()


async def _populate(site: Site) -> int:
    """Keys, a server with an encrypted password, ledger entries, both kinds of JSON null,
    then a secret-key rotation and a ledger-key rotation. Returns the server's id."""
    db = site.use()
    try:
        async with db.session() as session:
            await create_api_key(session, name="ops", scope="admin", plan="pro", actor="test")
        async with db.session() as session:
            server = await create_server(
                session,
                name="web-1",
                host="127.0.0.1",
                password=PASSWORD,
                trust_on_first_use=True,
                actor="test",
            )
        for i in range(25):
            await audit_ledger.record("command_executed", actor="key:1", params={"i": i})
        await make_checkpoint()
        async with db.engine.begin() as conn:
            for compact_id, certificate in (("cmp_a1", JSON.NULL), ("cmp_b2", null())):
                await conn.execute(
                    insert(CompactAsset).values(
                        compact_id=compact_id, summary={"x": 1.5}, certificate=certificate
                    )
                )
        async with db.session() as session:
            await crypto.rotate_key(session)  # old key kept: a MultiFernet of two
        await rotate_key(actor="test")
        for i in range(5):
            await audit_ledger.record("quarantine", actor="agent:security", target=f"10.0.0.{i}")
        return int(server["id"])
    finally:
        await db.dispose()


def _dump_lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as handle:
        return handle.read().splitlines(keepends=True)


def _write_dump(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as handle:
        handle.writelines(lines)
    return path


async def _counts(site: Site) -> dict[str, int]:
    db = Database(site.url)
    try:
        async with db.engine.connect() as conn:
            return {
                t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar())
                for t in tables()
            }
    finally:
        await db.dispose()


@pytest.mark.parametrize(("source", "target"), [("sqlite", "postgres"), ("postgres", "sqlite")])
async def test_round_trip_across_backends(make_site, tmp_path, source, target) -> None:
    src = await make_site(source)
    server_id = await _populate(src)
    dump = tmp_path / "dump.jsonl.gz"
    proc = await asyncio.to_thread(run_cli, "db", "export", str(dump), env=src.env)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"exporting: (\d+)/\1 rows", proc.stderr), proc.stderr  # progress
    lines = _dump_lines(dump)
    manifest = orjson.loads(lines[0])
    assert PASSWORD.encode() not in b"".join(lines)

    db = src.use()
    async with db.session() as session:
        token = (
            await session.execute(select(Server.credential_encrypted).where(Server.id == server_id))
        ).scalar_one()
    await db.dispose()
    assert token.encode() in b"".join(lines)  # ciphertext, exactly as stored
    assert manifest["tables"]["audit_log"]["rows"] == manifest["ledger"]["tree_size"] == 33
    ring = Keyring(manifest["ledger"]["verifier_keys"])
    assert len(ring) == 2
    assert ring.verify(manifest["ledger"]["checkpoint"]).signer == manifest["ledger"]["signed_by"]
    src_counts = await _counts(src)
    assert {n: t["rows"] for n, t in manifest["tables"].items()} == src_counts

    dst = await make_site(target)
    proc = await asyncio.to_thread(run_cli, "db", "restore", str(dump), env=dst.env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ledger verified: 33 entries" in proc.stdout
    assert re.search(r"restoring: (\d+)/\1 rows", proc.stderr), proc.stderr
    restored_counts = await _counts(dst)
    assert restored_counts.pop("audit_log") == src_counts["audit_log"] + 1  # database_restored
    assert restored_counts.pop("audit_tree") > src_counts["audit_tree"]  # ... and its nodes
    assert restored_counts == {
        n: c for n, c in src_counts.items() if n not in {"audit_log", "audit_tree"}
    }

    proc = await asyncio.to_thread(run_cli, "audit", "verify", env=dst.env)
    # the 33 restored entries and the restore's own database_restored entry
    assert proc.returncode == 0 and "OK: 34 entries" in proc.stdout, proc.stdout + proc.stderr
    assert proc.stdout.count("signed by test/log+") == 2  # both keys named

    db = dst.use()
    try:
        async with db.session() as session:
            stored = (
                await session.execute(
                    select(Server.credential_encrypted).where(Server.id == server_id)
                )
            ).scalar_one()
        assert crypto.decrypt_secret(stored) == PASSWORD
        async with db.engine.connect() as conn:
            nulls = (
                await conn.execute(
                    select(CompactAsset.compact_id, CompactAsset.certificate.is_(None)).order_by(
                        CompactAsset.compact_id
                    )
                )
            ).all()
        assert [tuple(r) for r in nulls] == [("cmp_a1", False), ("cmp_b2", True)]
        restored = (await audit_ledger.entries_after(32))[0]
        assert restored["action"] == "database_restored" and restored["seq"] == 33
        assert restored["params"]["checkpoint_root"] == manifest["ledger"]["root_hash"]

        # the restored ledger continues: new entries, a new checkpoint consistent with the old
        old_size = manifest["ledger"]["checkpoint_size"]
        for i in range(7):
            await audit_ledger.record("command_executed", actor="key:2", params={"after": i})
        new = await make_checkpoint()
        async with db.session() as session:
            proof, old_root, new_root = await store.consistency(session, old_size, new.tree_size)
        assert old_root.hex() == manifest["ledger"]["root_hash"]
        assert verify_consistency(old_size, new.tree_size, old_root, new_root, proof)
        async with db.session() as session:  # ids continue after the restored ones
            row, _ = await create_api_key(session, name="new", scope="read", actor="test")
        assert row.id == src_counts["api_keys"] + 1
    finally:
        await db.dispose()
    proc = await asyncio.to_thread(run_cli, "audit", "verify", env=dst.env)
    # 33 restored + database_restored + 7 + the new key's api_key_created entry
    assert proc.returncode == 0 and "OK: 42 entries" in proc.stdout, proc.stdout + proc.stderr

    proc = await asyncio.to_thread(run_cli, "db", "restore", str(dump), env=dst.env)
    assert proc.returncode == 5 and "not empty" in proc.stderr, proc.stderr


def _rehash(lines: list[bytes]) -> list[bytes]:
    """Recompute every table's row count and SHA-256 in the manifest (a consistent forgery)."""
    manifest = orjson.loads(lines[0])
    table, digest = None, hashlib.sha256()
    for line in lines[1:]:
        if line.startswith(b"{"):
            if table:
                manifest["tables"][table]["sha256"] = digest.hexdigest()
            table, digest = orjson.loads(line)["table"], hashlib.sha256()
        else:
            digest.update(line)
    manifest["tables"][table]["sha256"] = digest.hexdigest()
    return [orjson.dumps(manifest) + b"\n", *lines[1:]]


async def test_bad_dumps_and_targets_restore_nothing(make_site, tmp_path, backend) -> None:
    src = await make_site(backend)
    await _populate(src)
    dump = tmp_path / "dump.jsonl.gz"
    proc = await asyncio.to_thread(run_cli, "db", "export", str(dump), env=src.env)
    assert proc.returncode == 0, proc.stderr
    lines = _dump_lines(dump)
    dst = await make_site(backend)
    empty = await _counts(dst)

    async def refused(name: str, bad: list[bytes], code: int, words: str, site=dst) -> None:
        path = _write_dump(tmp_path / name, bad)
        proc = await asyncio.to_thread(run_cli, "db", "restore", str(path), env=site.env)
        assert proc.returncode == code and words in proc.stderr, (name, proc.stderr)
        assert await _counts(site) == empty, name  # nothing half-restored

    # a flipped byte in a late table (earlier tables were already inserted when it is read)
    last = max(i for i, line in enumerate(lines) if b"command_executed" in line)
    corrupted = list(lines)
    corrupted[last] = corrupted[last].replace(b"key:1", b"key:7")
    await refused("flipped.gz", corrupted, 3, "SHA-256")
    await refused("truncated.gz", lines[: len(lines) - 3], 3, "truncated")

    # a ledger entry rewritten and every table hash recomputed: the checkpoint catches it
    await refused("forged.gz", _rehash(corrupted), 6, "does not verify")

    manifest = orjson.loads(lines[0])
    manifest["alembic_revision"] = ["0001_platform"]
    await refused("old.gz", [orjson.dumps(manifest) + b"\n", *lines[1:]], 4, "revision")

    # the secret key the dump needs is not installed where it is restored
    elsewhere = await make_site(backend, tmp_path / "other-data")
    (tmp_path / "other-data").mkdir()
    for name in ("ledger.key", "ledger.keyring"):
        (tmp_path / "other-data" / name).write_bytes((src.settings.data_dir / name).read_bytes())
    await refused("nokey.gz", lines, 6, "cannot be decrypted", site=elsewhere)

    # the ledger keys are not trusted where it is restored
    stranger = await make_site(backend, tmp_path / "stranger-data")
    (tmp_path / "stranger-data").mkdir()
    secret = src.settings.data_dir / "secret.key"
    (tmp_path / "stranger-data" / "secret.key").write_bytes(secret.read_bytes())
    await refused("nokeyring.gz", lines, 6, "no key in the keyring", site=stranger)

    # and the real thing still restores into the target that refused all of the above
    proc = await asyncio.to_thread(run_cli, "db", "restore", str(dump), env=dst.env)
    assert proc.returncode == 0, proc.stderr
    async with Database(dst.url).engine.connect() as conn:
        size = (await conn.execute(text("SELECT size FROM audit_head"))).scalar()
    assert size == 34  # and the database_restored entry
