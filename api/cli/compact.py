"""``execflow compact FILE_OR_URL`` and ``execflow rehydrate ID`` (in-process, with progress)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from api.cli import load_settings
from models import migrate
from models.db import init_database

ACTOR = "cli"


def _progress() -> Progress:
    """Progress on stderr: stdout carries only the JSON result (it is often piped)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


async def _compact(source: str, quality: float, fmt: str) -> dict[str, Any]:
    from compaction import service
    from models import jobs
    from orchestrator.runner import claim, execute

    path = Path(source)
    if "://" in source:
        row = await service.request_compaction(
            asset_url=source, quality_target=quality, format_preference=fmt, actor=ACTOR
        )
    else:
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise click.ClickException(f"cannot read {source}: {exc}") from exc
        row = await service.request_compaction(
            source=data,
            source_name=path.name,
            quality_target=quality,
            format_preference=fmt,
            actor=ACTOR,
        )
    assert row.job_id is not None
    from models.db import get_database

    job = await claim(worker="cli", job_id=row.job_id)
    if job is None:  # a running server's worker took it first: just follow its progress
        async with get_database().session() as session:
            job = await jobs.get_job(session, row.job_id)
    assert job is not None
    with _progress() as bar:
        task_id = bar.add_task(f"compacting {path.name or source}", total=1.0)
        run = asyncio.ensure_future(execute(job) if job.worker == "cli" else _follow(row.job_id))
        while not run.done():
            await asyncio.wait({run}, timeout=0.3)
            async with get_database().session() as session:
                current = await jobs.get_job(session, row.job_id)
            if current is not None:
                bar.update(
                    task_id, completed=current.progress, description=current.message or "compacting"
                )
        bar.update(task_id, completed=1.0)
    async with get_database().session() as session:
        return await service.get_compaction(session, compact_id=row.compact_id)


async def _follow(job_id: int) -> None:
    from models import jobs
    from models.db import get_database

    for _ in range(3600):
        async with get_database().session() as session:
            job = await jobs.get_job(session, job_id)
        if job is None or job.status in jobs.FINAL_STATES:
            return
        await asyncio.sleep(0.5)


async def _rehydrate(compact_id: str, output: Path | None) -> dict[str, Any]:
    from compaction import service
    from models.db import get_database

    with _progress() as bar:
        task_id = bar.add_task(f"rehydrating {compact_id}", total=1.0)
        async with get_database().session() as session:
            result = await service.rehydrate(session, compact_id=compact_id, actor=ACTOR)
            path, _media = await service.restored_file(session, compact_id=compact_id)
        bar.update(task_id, completed=1.0)
    if output is not None:
        shutil.copyfile(path, output)
        result["written_to"] = str(output)
    return result


def _run(coro_factory: Any) -> dict[str, Any]:
    from models.errors import ExecFlowError

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)

    async def main() -> dict[str, Any]:
        db = init_database(settings.db_url)
        try:
            return await coro_factory()  # type: ignore[no-any-return]
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except ExecFlowError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc


@click.command()
@click.argument("source")
@click.option(
    "--quality",
    "-q",
    default=85.0,
    type=click.FloatRange(0, 100),
    help="Quality target 0-100 (100 = lossless)",
)
@click.option(
    "--format",
    "fmt",
    default="auto",
    type=click.Choice(["webp", "avif", "jpeg", "png", "auto"]),
    help="Delivery rendition format",
)
def compact(source: str, quality: float, fmt: str) -> None:
    """Compact an image or video FILE or URL; prints the result as JSON."""
    result = _run(lambda: _compact(source, quality, fmt))
    click.echo(json.dumps(result, indent=2, default=str))
    if result.get("status") != "succeeded":
        raise SystemExit(1)


@click.command()
@click.argument("compact_id")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Also copy the restored file here",
)
def rehydrate(compact_id: str, output: Path | None) -> None:
    """Decode a compacted asset back to a file; prints its SHA-256 and exactness."""
    click.echo(json.dumps(_run(lambda: _rehydrate(compact_id, output)), indent=2))


def register(main: click.Group) -> None:
    main.add_command(compact)
    main.add_command(rehydrate)
