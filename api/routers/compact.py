"""CompactEdge: compact media, rehydrate it, prove its integrity, score its mobility."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from compaction import service
from models.errors import NotFound

router = make_router(tags=["compactedge"])

CompactIdPath = Annotated[str, Path(min_length=1, max_length=40)]


class CompactCreate(BaseModel):
    asset_url: str = Field(min_length=1, max_length=2048)
    quality_target: float = Field(
        default=85, ge=0, le=100, description="0-100; 100 = lossless (see docs/codec.md)"
    )
    format_preference: Literal["webp", "avif", "jpeg", "png", "auto"] = "auto"


class RehydrateRequest(BaseModel):
    compact_id: str = Field(min_length=1, max_length=40)


def _ok(body: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, **body}


def _checked(compact_id: str) -> str:
    if not compact_id.startswith("cmp_") or not compact_id[4:].isalnum():
        raise NotFound(f"Compaction {compact_id} not found")
    return compact_id


@router.post("/compact", status_code=202)
async def create_compaction(body: CompactCreate, key: CurrentKey) -> dict[str, Any]:
    """Queue an asset for compaction; returns its compact_id at once."""
    row = await service.request_compaction(
        asset_url=body.asset_url,
        quality_target=body.quality_target,
        format_preference=body.format_preference,
        actor=key.actor,
    )
    return _ok(
        {
            "compact_id": row.compact_id,
            "status": row.status,
            "job_id": row.job_id,
            "status_url": f"/api/compact/{row.compact_id}",
        }
    )


@router.get("/compact/{compact_id}")
async def get_compaction(session: SessionDep, compact_id: CompactIdPath) -> dict[str, Any]:
    """Status, progress, sizes and ratio of one compaction."""
    return _ok(await service.get_compaction(session, compact_id=_checked(compact_id)))


@router.get("/compact/{compact_id}/restored", response_class=FileResponse)
async def get_restored(session: SessionDep, compact_id: CompactIdPath) -> FileResponse:
    """The restored asset written by the last rehydrate."""
    path, media = await service.restored_file(session, compact_id=_checked(compact_id))
    return FileResponse(path, media_type=media)


@router.get("/compact/{compact_id}/rendition", response_class=FileResponse)
async def get_rendition(session: SessionDep, compact_id: CompactIdPath) -> FileResponse:
    """The delivery rendition (a browser-decodable file)."""
    path, media = await service.rendition_file(session, compact_id=_checked(compact_id))
    return FileResponse(path, media_type=media)


@router.post("/rehydrate")
async def rehydrate(
    body: RehydrateRequest, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> dict[str, Any]:
    """Decode the compact form; returns the restored asset's URL, SHA-256 and exactness."""
    return _ok(
        await service.rehydrate(
            session, compact_id=_checked(body.compact_id), actor=key.actor, request_id=request_id
        )
    )


@router.get("/integrity/{compact_id}")
async def get_integrity(session: SessionDep, compact_id: CompactIdPath) -> dict[str, Any]:
    """The signed Quality Integrity Certificate, verified against the stored bitstream."""
    return _ok(await service.integrity(session, compact_id=_checked(compact_id)))


@router.get("/mobility-score/{asset_id}")
async def get_mobility_score(
    session: SessionDep, asset_id: Annotated[str, Path(min_length=1, max_length=40)]
) -> dict[str, Any]:
    """The Edge Mobility Score (0-100) with its components."""
    return _ok(await service.mobility_score(session, asset_id=_checked(asset_id)))
