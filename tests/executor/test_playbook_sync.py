"""Replicas starting together on a fresh database register the playbook files once, all of
them starting: before the fix every concurrent ``sync_playbooks`` but one failed with a
duplicate playbook name, and that failure stopped the replica's start (its lifespan)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import func, select

from models import playbooks as repo
from models.db import init_database
from models.settings import Settings, configure
from tests.conftest import create_database
from tests.executor.conftest import PLAYBOOKS
from tools import playbooks


async def test_concurrent_first_syncs_all_succeed(tmp_path: Path) -> None:
    url, drop = await create_database("postgres", tmp_path)
    configure(Settings(data_dir=tmp_path, database_url=url, playbooks_dir=PLAYBOOKS))
    db = init_database(url)
    try:
        results = await asyncio.gather(*(playbooks.sync_playbooks(force=True) for _ in range(4)))
        assert all(problems == results[0] for problems in results)  # the broken file, each time
        async with db.session() as session:
            names = list(await session.scalars(select(repo.Playbook.name)))
            total = await session.scalar(select(func.count()).select_from(repo.Playbook))
        assert total == len(set(names)) and "test-touch-file" in names
    finally:
        await db.dispose()
        await drop()
