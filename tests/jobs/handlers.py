"""Job handlers the job tests enqueue; workers import them via EXECFLOW_JOB_MODULES."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from models.jobs import JobContext, job_handler


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@job_handler("test.noop")
async def noop(ctx: JobContext, **args: Any) -> dict[str, Any]:
    return {"ok": True, "echo": args}


@job_handler("test.progress")
async def progress(ctx: JobContext) -> dict[str, Any]:
    await ctx.progress(0.5, "half way")
    return {"ok": True}


@job_handler("test.effect")
async def effect(
    ctx: JobContext,
    effects: str | None = None,
    marker: str | None = None,
    gate: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Once-only side effect (a line in ``effects``), then mark started, then wait for ``gate``."""
    if effects:
        await ctx.step("effect", lambda: asyncio.to_thread(_append, effects, f"job {ctx.job_id}"))
    if marker:
        _append(marker, f"attempt {ctx.attempt} pid {os.getpid()}")
    if gate:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not Path(gate).exists():
            if loop.time() > deadline:
                raise TimeoutError("gate never opened")
            await asyncio.sleep(0.05)
    return {"attempt": ctx.attempt}


@job_handler("test.flaky")
async def flaky(ctx: JobContext, fail_times: int = 1) -> dict[str, Any]:
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"failing attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}
