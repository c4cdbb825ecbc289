"""A worker process for the killed-worker test: runs one agent job with a file-logging backend.

Usage: python -m tests.agents.worker_child LOGFILE BLOCK_ON
Records each tool call as a line in LOGFILE (flushed and fsynced before the call returns) and
blocks forever inside call number BLOCK_ON, so the parent can kill it mid-side-effect.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")

from agents.toolkit import RecordingBackend, ToolSpec


class FileBackend(RecordingBackend):
    def __init__(self, path: str, block_on: int = 0) -> None:
        super().__init__()
        self.path, self.block_on = path, block_on

    async def call(
        self, spec: ToolSpec, args: dict[str, Any], *, actor: str, request_id: str | None
    ) -> dict[str, Any]:
        with open(self.path, "a") as f:
            f.write(json.dumps({"tool": spec.name, "args": args}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with open(self.path) as f:
            count = sum(1 for _ in f)
        if self.block_on and count >= self.block_on:
            await asyncio.sleep(3600)  # the side effect is "in flight" when we are killed
        return await super().call(spec, args, actor=actor, request_id=request_id)


async def main(path: str, block_on: int) -> None:
    import orchestrator.tasks as task_service
    from models.db import init_database
    from models.settings import get_settings
    from orchestrator.runner import claim, execute

    init_database(get_settings().db_url)
    task_service.backend_override = FileBackend(path, block_on)
    job = await claim(worker=f"inprocess:child:{os.getpid()}")
    assert job is not None, "no job to run"
    await execute(job)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
