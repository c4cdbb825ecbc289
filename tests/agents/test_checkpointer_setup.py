"""The PostgreSQL checkpointer's one-time setup is safe when several processes do it at once.

Found by the cluster test: on a fresh database, two Celery workers ran their first agent tasks
at the same moment, both ran LangGraph's checkpoint migrations, and one task failed with a
duplicate key in ``checkpoint_migrations``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from models.settings import Settings
from orchestrator import graph
from tests.conftest import create_database


async def test_concurrent_first_setups_all_succeed(tmp_path: Path) -> None:
    url, drop = await create_database("postgres", tmp_path)
    settings = Settings(data_dir=tmp_path, database_url=url)
    try:
        graph._pg_setup_done.clear()  # as in fresh processes: none has set up yet

        async def first_use() -> bool:
            async with graph.open_checkpointer(settings) as saver:
                return await saver.aget_tuple({"configurable": {"thread_id": "t"}}) is None

        assert await asyncio.gather(*(first_use() for _ in range(6))) == [True] * 6
    finally:
        graph._pg_setup_done.clear()
        await drop()
