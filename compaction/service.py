"""CompactEdge service functions: request a compaction, run it as queued work, read results,
rehydrate, verify integrity, score mobility. Routers and the CLI call only these.

The codec modules (torch, numba, the AV1/JPEG XL bindings: seconds of import time) are imported
inside the functions that run codec work, in worker threads, so an API replica that only accepts
requests and serves files starts without them.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from compaction import certificate, ingest, mobility
from compaction.formats import MEDIA_TYPES, PREFERENCES
from compaction.store import (
    CompactAsset,
    asset_dir,
    get_by_compact_id,
    new_compact_id,
    remove_files,
)
from models import jobs, ledger
from models.db import get_database, utcnow
from models.errors import BadRequest, Conflict, ExecFlowError, NotFound

JOB_NAME = "compact.asset"
BITSTREAM = "compact.cedg"
INCOMING = "incoming.bin"
EXTENSIONS = {"mkv": "mkv", "mp4": "mp4", "jpeg": "jpg"}


def _validate(quality_target: float, format_preference: str) -> None:
    if not 0 <= quality_target <= 100:
        raise BadRequest("quality_target must be between 0 and 100", fields=["quality_target"])
    if format_preference not in PREFERENCES:
        raise BadRequest(
            f"format_preference must be one of {', '.join(PREFERENCES)}",
            fields=["format_preference"],
        )
    if quality_target >= 100 and format_preference == "jpeg":
        raise BadRequest(
            "JPEG cannot be lossless: quality_target 100 needs another format",
            fields=["format_preference"],
            code="FORMAT_CANNOT_BE_LOSSLESS",
        )


async def request_compaction(
    *,
    asset_url: str | None = None,
    source: bytes | None = None,
    source_name: str | None = None,
    quality_target: float = 85,
    format_preference: str = "auto",
    actor: str,
) -> CompactAsset:
    """Validate, store the request and queue the work; returns at once with the compact id."""
    _validate(quality_target, format_preference)
    if asset_url is not None:
        from tools.ssrf import check_url

        check_url(asset_url)  # refuse private/loopback/metadata targets before queueing
    elif source is None:
        raise BadRequest("asset_url is required", fields=["asset_url"])
    elif len(source) > ingest.MAX_BYTES:
        raise BadRequest(f"asset is larger than {ingest.MAX_BYTES} bytes", code="ASSET_TOO_LARGE")
    cid = new_compact_id()
    if source is not None:
        path = asset_dir(cid) / INCOMING
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source)
    row = CompactAsset(
        compact_id=cid,
        asset_url=asset_url,
        source_name=source_name,
        quality_target=float(quality_target),
        format_preference=format_preference,
        created_by=actor,
        status="queued",
        summary={},
    )
    async with get_database().session() as session:  # committed before a worker can look
        session.add(row)
    job_id = await jobs.enqueue(JOB_NAME, {"compact_id": cid})
    async with get_database().session() as session:
        await session.execute(
            update(CompactAsset).where(CompactAsset.compact_id == cid).values(job_id=job_id)
        )
    row.job_id = job_id
    return row


async def _set(cid: str, **values: Any) -> None:
    async with get_database().session() as session:
        await session.execute(
            update(CompactAsset).where(CompactAsset.compact_id == cid).values(**values)
        )


@jobs.job_handler(JOB_NAME)
async def compact_asset_job(ctx: jobs.JobContext, *, compact_id: str) -> dict[str, Any]:
    """Queued work: fetch, decode, compress, render, certify, store; all or nothing."""
    async with get_database().session() as session:
        row = await get_by_compact_id(session, compact_id)
        if row is None:
            raise NotFound(f"compaction {compact_id} not found")
        url, qt, pref = row.asset_url, row.quality_target, row.format_preference
        actor = row.created_by or "system"
    await _set(compact_id, status="running")
    try:
        await ctx.progress(0.05, "fetching")
        if url is not None:
            original = await ingest.fetch(url)
        else:
            original = (asset_dir(compact_id) / INCOMING).read_bytes()
        await ctx.progress(0.15, "decoding")
        media = await asyncio.to_thread(ingest.decode_media, original)
        await ctx.progress(0.25, "compressing and rendering")
        from compaction import pipeline

        result = await asyncio.to_thread(
            pipeline.compact_media,
            media,
            original,
            quality_target=qt,
            preference=pref,
            compact_id=compact_id,
        )
        await ctx.progress(0.9, "certifying")
        cert = await asyncio.to_thread(certificate.sign, result.body)
        folder = asset_dir(compact_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BITSTREAM).write_bytes(result.bitstream)
        ext = EXTENSIONS.get(result.rendition_format, result.rendition_format)
        (folder / f"rendition.{ext}").write_bytes(result.rendition)
        (folder / INCOMING).unlink(missing_ok=True)
    except ExecFlowError as exc:
        remove_files(compact_id)
        await _set(
            compact_id,
            status="failed",
            finished_at=utcnow(),
            error={"code": exc.code, "message": exc.message},
        )
        raise
    except Exception as exc:  # an unexpected decoder failure: record it, keep nothing
        remove_files(compact_id)
        await _set(
            compact_id,
            status="failed",
            finished_at=utcnow(),
            error={"code": "COMPACTION_FAILED", "message": str(exc)[:500]},
        )
        raise
    sizes = result.body["sizes"]
    summary = {
        "kind": media.kind,
        "width": media.width,
        "height": media.height,
        "frames": len(media.frames),
        "scores": result.body["scores"],
        "bit_exact": result.body["bit_exact"],
        "timings": result.timings,
        "rendition": result.body["rendition"],
        "codec": result.body["codec"],
    }
    await _set(
        compact_id,
        status="succeeded",
        finished_at=utcnow(),
        kind=media.kind,
        original_bytes=sizes["original_bytes"],
        compact_bytes=sizes["compact_bytes"],
        rendition_format=result.rendition_format,
        rendition_bytes=sizes["rendition_bytes"],
        summary=summary,
        certificate=cert,
    )
    await ctx.progress(1.0, "done")
    await ledger.record(
        "compact_created",
        actor=actor,
        target=compact_id,
        params={"asset_url": url, "quality_target": qt, "format": pref},
        result={
            "bitstream_sha256": result.body["hashes"]["bitstream_sha256"],
            "compact_bytes": sizes["compact_bytes"],
            "bit_exact": result.body["bit_exact"],
        },
    )
    return {"compact_id": compact_id, "compact_bytes": sizes["compact_bytes"]}


async def _row(session: AsyncSession, compact_id: str) -> CompactAsset:
    row = await get_by_compact_id(session, compact_id)
    if row is None:
        raise NotFound(f"Compaction {compact_id} not found")
    return row


def describe(row: CompactAsset, job: jobs.Job | None) -> dict[str, Any]:
    """The public view of one compaction (status, progress, sizes, ratio)."""
    ratio = (
        row.original_bytes / row.compact_bytes if row.original_bytes and row.compact_bytes else None
    )
    return {
        "compact_id": row.compact_id,
        "status": row.status,
        "progress": 1.0 if row.status == "succeeded" else (job.progress if job else 0.0),
        "message": job.message if job else None,
        "asset_url": row.asset_url,
        "quality_target": row.quality_target,
        "format_preference": row.format_preference,
        "kind": row.kind,
        "original_bytes": row.original_bytes,
        "compact_bytes": row.compact_bytes,
        "compression_ratio": round(ratio, 3) if ratio else None,
        "size_reduction_percent": round(100 * (1 - 1 / ratio), 2) if ratio else None,
        "rendition": {
            **(row.summary or {}).get("rendition", {}),
            "url": f"/api/compact/{row.compact_id}/rendition",
        }
        if row.status == "succeeded"
        else None,
        "scores": (row.summary or {}).get("scores"),
        "bit_exact": (row.summary or {}).get("bit_exact"),
        "error": row.error,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


async def get_compaction(session: AsyncSession, *, compact_id: str) -> dict[str, Any]:
    row = await _row(session, compact_id)
    job = await jobs.get_job(session, row.job_id) if row.job_id else None
    return describe(row, job)


async def _ready(session: AsyncSession, compact_id: str) -> CompactAsset:
    row = await _row(session, compact_id)
    if row.status != "succeeded":
        raise Conflict(f"Compaction {compact_id} is {row.status}", code="NOT_READY")
    return row


def _restore_files(row: CompactAsset) -> tuple[Path, str, str]:
    """Decode the stored bitstream to a restored file; (path, pixel sha256, file sha256)."""
    from compaction import codec, pipeline, video

    folder = asset_dir(row.compact_id)
    bitstream = (folder / BITSTREAM).read_bytes()
    if row.kind == "video":
        frames = video.decode_video_bytes(bitstream)
        ext = "mkv"
        data = video.encode_video(frames, 25, crf=None)
    else:
        rgb = codec.decompress_image(bitstream)
        frames, ext = [rgb], "png"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG")
        data = buf.getvalue()
    path = folder / f"restored.{ext}"
    path.write_bytes(data)
    return path, pipeline.pixels_sha256(frames), hashlib.sha256(data).hexdigest()


async def rehydrate(
    session: AsyncSession, *, compact_id: str, actor: str, request_id: str | None = None
) -> dict[str, Any]:
    """Decode the compact form; the restored asset's URL, its hashes and whether it is exact."""
    row = await _ready(session, compact_id)
    path, pixel_sha, file_sha = await asyncio.to_thread(_restore_files, row)
    hashes = (row.certificate or {}).get("hashes", {})
    result = {
        "compact_id": compact_id,
        "restored_url": f"/api/compact/{compact_id}/restored",
        "media_type": "video/x-matroska" if path.suffix == ".mkv" else "image/png",
        "sha256": pixel_sha,
        "file_sha256": file_sha,
        "original_pixels_sha256": hashes.get("original_pixels_sha256"),
        "bit_exact": pixel_sha == hashes.get("original_pixels_sha256"),
        "matches_certificate": pixel_sha == hashes.get("decoded_pixels_sha256"),
    }
    await session.commit()  # end the read before writers below take SQLite's write lock
    await _set(compact_id, restored=result)
    await ledger.record(
        "compact_rehydrated",
        actor=actor,
        target=compact_id,
        result={"sha256": pixel_sha, "bit_exact": result["bit_exact"]},
        request_id=request_id,
    )
    return result


async def restored_file(session: AsyncSession, *, compact_id: str) -> tuple[Path, str]:
    """The restored file of a rehydrated compaction and its media type."""
    await _ready(session, compact_id)
    for ext, media in (("png", "image/png"), ("mkv", "video/x-matroska")):
        path = asset_dir(compact_id) / f"restored.{ext}"
        if path.exists():
            return path, media
    raise NotFound(
        f"Compaction {compact_id} has not been rehydrated yet: POST /api/rehydrate",
        code="NOT_REHYDRATED",
    )


async def rendition_file(session: AsyncSession, *, compact_id: str) -> tuple[Path, str]:
    row = await _ready(session, compact_id)
    fmt = row.rendition_format or "png"
    path = asset_dir(compact_id) / f"rendition.{EXTENSIONS.get(fmt, fmt)}"
    media = MEDIA_TYPES.get(fmt, "video/mp4" if fmt == "mp4" else "video/x-matroska")
    return path, media


async def integrity(session: AsyncSession, *, compact_id: str) -> dict[str, Any]:
    """The signed certificate and a fresh verification against the stored bitstream."""
    row = await _ready(session, compact_id)
    path = asset_dir(compact_id) / BITSTREAM
    bitstream = path.read_bytes() if path.exists() else None
    cert = row.certificate or {}
    return {"certificate": cert, "verification": certificate.verify(cert, bitstream)}


async def mobility_score(session: AsyncSession, *, asset_id: str) -> dict[str, Any]:
    """The Edge Mobility Score of a compacted asset, with its components."""
    row = await _ready(session, asset_id)
    rendition = (row.summary or {}).get("rendition", {})
    scored = mobility.mobility_score(
        original_bytes=row.original_bytes or 0,
        delivered_bytes=row.rendition_bytes or 0,
        ms_ssim=float(rendition.get("ms_ssim") or 0),
        lossless=bool(rendition.get("lossless")),
        fmt=row.rendition_format or "png",
    )
    return {"asset_id": asset_id, **scored}
