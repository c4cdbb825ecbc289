"""Fixtures for ledger tests: a fresh, migrated database per test (tamper tests wreck theirs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from models.db import Database, init_database
from models.ledger import signing
from models.settings import Settings, configure
from tests.conftest import create_database

APPEND_ONLY = ("audit_log", "audit_tree", "audit_checkpoints")


@dataclass
class Ledger:
    url: str
    settings: Settings
    db: Database

    @property
    def env(self) -> dict[str, str]:
        return {
            "EXECFLOW_DATABASE_URL": self.url,
            "EXECFLOW_DATA_DIR": str(self.settings.data_dir),
            "EXECFLOW_LOG_FORMAT": "text",
            "EXECFLOW_LEDGER_ORIGIN": self.settings.ledger_origin,
        }

    async def bypass_triggers(self) -> None:
        """What an attacker with database access does first."""
        async with self.db.engine.begin() as conn:
            if self.db.dialect == "postgresql":
                for table in (*APPEND_ONLY, "audit_head"):
                    await conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                for table in APPEND_ONLY:
                    for event in ("update", "delete"):
                        await conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{event}"))

    async def sql(self, statement: str, **params: object) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(text(statement), params)


@pytest.fixture
async def ledger(backend: str, tmp_path: Path) -> AsyncIterator[Ledger]:
    url, drop = await create_database(backend, tmp_path)
    settings = Settings(
        data_dir=tmp_path / "data", database_url=url, log_format="text", ledger_origin="test/log"
    )
    configure(settings)
    signing.reset_cache()
    db = init_database(url)
    yield Ledger(url, settings, db)
    await db.dispose()
    await drop()
