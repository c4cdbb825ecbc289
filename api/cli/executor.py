"""``execflow servers`` and ``execflow playbooks``: list, execute (streamed), run playbooks."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from api.cli import load_settings
from models.db import init_database
from models.errors import ExecFlowError

T = TypeVar("T")


def _run(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(session)`` against the configured database; errors exit with their code."""
    settings = load_settings()

    async def go() -> T:
        db = init_database(settings.db_url)
        try:
            async with db.session() as session:
                return await work(session)
        finally:
            from tools.executor import close_pool

            await close_pool()
            await db.dispose()

    try:
        return asyncio.run(go())
    except ExecFlowError as exc:
        click.echo(f"error: {exc.code}: {exc.message}", err=True)
        sys.exit(1)


@click.group()
def servers() -> None:
    """Managed servers and remote execution."""


@servers.command("list")
def servers_list() -> None:
    """List servers with their status."""
    from tools.servers import list_servers

    for s in _run(list_servers)["servers"]:
        tags = ",".join(s["tags"])
        click.echo(
            f"{s['id']:>4}  {s['name']:<24} {s['ip']}:{s['port']:<6} {s['transport']:<5} "
            f"{s['status']:<8} {tags}"
        )


@servers.command("exec")
@click.argument("server_id", type=int)
@click.argument("command")
@click.option("--timeout", type=float, default=30, show_default=True, help="Seconds (max 300)")
def servers_exec(server_id: int, command: str, timeout: float) -> None:
    """Run COMMAND on SERVER_ID, printing output lines as they arrive; exits with its code."""
    from tools.executor import stream_command

    async def work(session: Any) -> int:
        events = await stream_command(
            session, server_id=server_id, command=command, timeout=timeout, actor="cli"
        )
        code = 1
        async for event in events:
            if event["event"] == "stdout":
                click.echo(event["data"])
            elif event["event"] == "stderr":
                click.echo(event["data"], err=True)
            elif event["event"] == "result":
                code = int(event["data"]["exit_code"])
            else:
                click.echo(f"error: {event['data']['code']}: {event['data']['message']}", err=True)
        return code

    sys.exit(_run(work))


@click.group()
def playbooks() -> None:
    """Playbooks: list and run."""


@playbooks.command("list")
def playbooks_list() -> None:
    """List playbooks with their step counts and last execution."""
    from tools.playbooks import list_playbooks

    for p in _run(list_playbooks)["playbooks"]:
        last = p["last_execution"]
        when = f"{last['status']} {last['time']}" if last else "never run"
        click.echo(f"{p['id']:>4}  {p['name']:<22} {p['step_count']:>2} steps  {when}")


def _params(pairs: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--param")
        params[name] = value
    return params


@playbooks.command("run")
@click.argument("playbook")
@click.option("--server", "server_id", type=int, default=None, help="Target server id")
@click.option("--param", "pairs", multiple=True, help="NAME=VALUE, repeatable")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan; run nothing")
@click.option("--wait", type=float, default=600, show_default=True, help="Seconds to follow it")
def playbooks_run(
    playbook: str, server_id: int | None, pairs: tuple[str, ...], dry_run: bool, wait: float
) -> None:
    """Run PLAYBOOK (name or id): queue it, then follow its steps while a worker runs it."""
    from rich.progress import Progress

    from tools.playbooks import get_run, run_playbook

    params = _params(pairs)

    async def work(session: Any) -> dict[str, Any]:
        result = await run_playbook(
            session,
            playbook=playbook,
            server_id=server_id,
            dry_run=dry_run,
            params=params,
            actor="cli",
        )
        if dry_run:
            return result
        deadline = time.monotonic() + wait
        total = len(result["plan"])
        with Progress() as progress:
            bar = progress.add_task(f"run {result['run_id']}", total=total)
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                session.expire_all()
                run = await get_run(session, run_id=result["run_id"])
                done = len([s for s in run["steps"] if s["phase"] == "step"])
                progress.update(
                    bar, completed=done, description=f"run {run['run_id']} {run['status']}"
                )
                if run["status"] in {"succeeded", "failed"}:
                    return run
        return {**result, "note": "still queued or running: is a worker up (execflow serve)?"}

    click.echo(json.dumps(_run(work), indent=2, default=str))


def register(main: click.Group) -> None:
    main.add_command(servers)
    main.add_command(playbooks)
