"""``execflow secrets rotate``: every stored secret re-encrypted, nothing lost, old key dropped."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select

from models import crypto
from models.db import Database
from models.errors import ExecFlowError
from models.servers import Server
from models.settings import Settings
from models.webhooks import WebhookEndpoint
from tests.support.processes import run_cli


async def _seed(database: Database, count: int = 3) -> dict[str, str]:
    """Rows with secrets in every registered column; returns {label: plaintext}."""
    plain: dict[str, str] = {}
    async with database.session() as session:
        for i in range(count):
            tag = uuid.uuid4().hex[:8]
            server = Server(name=f"rot-{tag}", host="127.0.0.1", port=22)
            server.credential_encrypted = crypto.encrypt_secret(f"ssh-secret-{tag}")
            endpoint = WebhookEndpoint(
                url=f"https://hooks.example/{tag}",
                events=["*"],
                secret_encrypted=crypto.encrypt_secret(f"whsec_{tag}"),
                previous_secret_encrypted=crypto.encrypt_secret(f"whsec_old_{tag}")
                if i % 2 == 0
                else None,
                created_by="test",
            )
            session.add_all([server, endpoint])
            await session.flush()
            plain[f"server:{server.id}"] = f"ssh-secret-{tag}"
            plain[f"hook:{endpoint.id}"] = f"whsec_{tag}"
            if endpoint.previous_secret_encrypted:
                plain[f"hook-prev:{endpoint.id}"] = f"whsec_old_{tag}"
        await session.commit()
    return plain


async def _tokens(database: Database) -> dict[str, str]:
    found: dict[str, str] = {}
    async with database.session() as session:
        for s in (await session.execute(select(Server))).scalars():
            if s.credential_encrypted:
                found[f"server:{s.id}"] = s.credential_encrypted
        for e in (await session.execute(select(WebhookEndpoint))).scalars():
            found[f"hook:{e.id}"] = e.secret_encrypted
            if e.previous_secret_encrypted:
                found[f"hook-prev:{e.id}"] = e.previous_secret_encrypted
    return found


def _env(settings: Settings) -> dict[str, str]:
    return {
        "EXECFLOW_DATA_DIR": str(settings.data_dir),
        "EXECFLOW_DATABASE_URL": settings.db_url,
        "EXECFLOW_SECRET_KEY_PATH": str(settings.secret_key_path),
    }


async def test_rotate_reencrypts_everything_then_drops_old_key(
    settings: Settings, database: Database
) -> None:
    crypto.reset_cache()
    plain = await _seed(database)
    before = await _tokens(database)
    assert settings.secret_key_path is not None
    old_keys = crypto.read_keys(settings.secret_key_path)

    result = await asyncio.to_thread(run_cli, "secrets", "rotate", env=_env(settings))
    assert result.returncode == 0, result.stderr
    keys = crypto.read_keys(settings.secret_key_path)
    assert len(keys) == len(old_keys) + 1 and keys[1:] == old_keys
    assert oct(settings.secret_key_path.stat().st_mode & 0o777) == "0o600"
    after = await _tokens(database)
    assert after.keys() == before.keys()
    newest = Fernet(keys[0])
    for label, token in after.items():
        assert token != before[label]
        assert crypto.decrypt_secret(token) == newest.decrypt(token.encode()).decode()
    for label, value in plain.items():
        assert crypto.decrypt_secret(after[label]) == value
    for text in plain.values():  # no secret printed
        assert text not in result.stdout + result.stderr

    result = await asyncio.to_thread(run_cli, "secrets", "rotate", "--drop-old", env=_env(settings))
    assert result.returncode == 0, result.stderr
    final_keys = crypto.read_keys(settings.secret_key_path)
    assert len(final_keys) == 1 and final_keys[0] not in keys
    final = await _tokens(database)
    for label, value in plain.items():
        assert crypto.decrypt_secret(final[label]) == value  # the running process reloads keys
        assert Fernet(final_keys[0]).decrypt(final[label].encode()).decode() == value
        for gone in keys:
            with pytest.raises(InvalidToken):
                Fernet(gone).decrypt(final[label].encode())


async def test_undecryptable_secret_aborts_rotation_without_changes(
    settings: Settings, database: Database
) -> None:
    crypto.reset_cache()
    await _seed(database, count=1)
    async with database.session() as session:
        server = Server(name=f"bad-{uuid.uuid4().hex[:8]}", host="127.0.0.1", port=22)
        server.credential_encrypted = Fernet(Fernet.generate_key()).encrypt(b"x").decode()
        session.add(server)
        await session.commit()
        bad_id = server.id
    before = await _tokens(database)
    async with database.session() as session:
        with pytest.raises(ExecFlowError, match=f"servers.credential_encrypted row {bad_id}"):
            await crypto.rotate_key(session, drop_old=True)
    assert await _tokens(database) == before
    assert settings.secret_key_path is not None
    assert len(crypto.read_keys(settings.secret_key_path)) >= 2  # old keys never dropped
    async with database.session() as session:  # clean up for other tests in this module
        await session.delete(await session.get(Server, bad_id))
        await session.commit()
