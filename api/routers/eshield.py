"""eShield: the threat feed, feed imports and quarantines."""

from __future__ import annotations

from typing import Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import Ok
from models.errors import Forbidden
from tools import eshield

router = make_router(tags=["eshield"])
MAX_FEED_CHARS = 5_000_000


class ThreatRead(BaseModel):
    id: int
    type: str
    value: str
    source: str
    confidence: int
    first_seen: str
    last_seen: str
    expires_at: str | None


class ThreatList(Ok):
    threats: list[ThreatRead]
    total: int
    limit: int
    offset: int


class FeedImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=MAX_FEED_CHARS, description="The feed file")
    source: str = Field(min_length=1, max_length=200, description="Where it came from")
    format: Literal["auto", "plain", "csv", "json", "stix"] = "auto"
    confidence: int = Field(default=50, ge=0, le=100)


class FeedImported(Ok):
    format: str
    source: str
    created: int
    updated: int


class QuarantineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=255, description="IP, CIDR or hostname")
    reason: str | None = Field(default=None, max_length=2000)
    duration_hours: float | None = Field(default=None, gt=0, description="null: until released")
    force: bool = Field(default=False, description="Admin only: override the safety checks")


class QuarantineRead(BaseModel):
    id: int
    target: str
    kind: str
    addresses: list[str]
    reason: str | None
    forced: bool
    status: str
    created_by: str
    created_at: str
    expires_at: str | None
    released_at: str | None


class QuarantineOne(Ok):
    quarantine: QuarantineRead


class QuarantineList(Ok):
    quarantines: list[QuarantineRead]
    total: int


@router.get("/eshield/threats", response_model=ThreatList)
async def list_threats(
    session: SessionDep,
    type: Literal["ip", "cidr", "domain", "hash"] | None = Query(default=None),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0),
) -> ThreatList:
    """The active threat feed: IPs, networks, domains and file hashes flagged as malicious."""
    return ThreatList(
        **await eshield.get_threat_feed(session, type=type, limit=limit, offset=offset)
    )


@router.post("/eshield/threats/import", response_model=FeedImported)
async def import_threats(
    body: FeedImport, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> FeedImported:
    """Import a feed (plain, CSV, JSON, STIX 2.1); a malformed feed imports nothing."""
    result = await eshield.import_threat_feed(
        session, **body.model_dump(), actor=key.actor, request_id=request_id
    )
    return FeedImported(**result)


@router.post("/eshield/quarantine", response_model=QuarantineOne, status_code=201)
async def quarantine(
    body: QuarantineCreate, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> QuarantineOne:
    """Quarantine an IP, network or host: every proxy blocks it at once."""
    if body.force and key.scope != "admin":
        raise Forbidden("force: true needs an admin key", code="FORCE_REQUIRES_ADMIN")
    row = await eshield.quarantine_target(
        session, **body.model_dump(), actor=key.actor, request_id=request_id
    )
    return QuarantineOne(quarantine=QuarantineRead(**row))


@router.get("/eshield/quarantine", response_model=QuarantineList)
async def list_quarantines(
    session: SessionDep,
    status: Literal["active", "released", "expired", "all"] = Query(default="active"),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0),
) -> QuarantineList:
    """Quarantines in force (or, with ``status``, past ones)."""
    result = await eshield.list_quarantines(session, status=status, limit=limit, offset=offset)
    return QuarantineList(
        quarantines=[QuarantineRead(**q) for q in result["quarantines"]], total=result["total"]
    )


@router.delete("/eshield/quarantine/{quarantine_id}", response_model=QuarantineOne)
async def release(
    session: SessionDep, key: CurrentKey, request_id: RequestId, quarantine_id: int = Path(ge=1)
) -> QuarantineOne:
    """Release a quarantine (admin)."""
    row = await eshield.release_quarantine(
        session, quarantine_id=quarantine_id, actor=key.actor, request_id=request_id
    )
    return QuarantineOne(quarantine=QuarantineRead(**row))
