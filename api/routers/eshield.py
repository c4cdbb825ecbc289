"""eShield: the threat feed, feed imports and quarantines."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import Query, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.background import periodically
from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import MAX_ID, Ok, id_path
from models.db import session_scope
from models.errors import Forbidden
from tools import eshield

router = make_router(tags=["eshield"])
MAX_FEED_CHARS = 5_000_000
SWEEP_SECONDS = 30.0
log = logging.getLogger(__name__)


async def _expire_quarantines() -> None:
    async with session_scope() as session:
        await eshield.expire_quarantines(session)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """A periodic sweep beside the per-quarantine expiry jobs (a lost job cannot keep one)."""
    async with periodically(
        _expire_quarantines,
        SWEEP_SECONDS,
        what="quarantine expiry sweep",
        initial_delay=SWEEP_SECONDS,
    ):
        yield


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
    """Give the feed itself (``content``, imported now) or a ``url`` (downloaded by a job)."""

    model_config = ConfigDict(extra="forbid")

    content: str | None = Field(
        default=None, min_length=1, max_length=MAX_FEED_CHARS, description="The feed file"
    )
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    source: str | None = Field(default=None, min_length=1, max_length=200)
    format: Literal["auto", "plain", "csv", "json", "stix"] = "auto"
    confidence: int = Field(default=50, ge=0, le=100)

    @model_validator(mode="after")
    def _one_input(self) -> FeedImport:
        if (self.content is None) == (self.url is None):
            raise ValueError("give exactly one of content or url")
        return self


class FeedImported(Ok):
    format: str | None = None
    source: str | None = None
    created: int | None = None
    updated: int | None = None
    job_id: int | None = Field(default=None, description="URL imports: the queued job")


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
    offset: int = Query(default=0, ge=0, le=MAX_ID),
) -> ThreatList:
    """The active threat feed: IPs, networks, domains and file hashes flagged as malicious."""
    return ThreatList(
        **await eshield.get_threat_feed(session, type=type, limit=limit, offset=offset)
    )


@router.post("/eshield/threats/import", response_model=FeedImported)
async def import_threats(
    body: FeedImport,
    session: SessionDep,
    key: CurrentKey,
    request_id: RequestId,
    response: Response,
) -> FeedImported:
    """Import a feed (plain, CSV, JSON, STIX 2.1); a malformed feed imports nothing.

    With ``content`` the import happens now (200); with ``url`` a job downloads it through
    the SSRF guard and imports it (202 with ``job_id``).
    """
    if body.url is not None:
        job_id = await eshield.enqueue_feed_import(
            url=body.url,
            source=body.source,
            format=body.format,
            confidence=body.confidence,
            actor=key.actor,
            request_id=request_id,
        )
        response.status_code = 202
        return FeedImported(job_id=job_id, source=body.source or body.url)
    assert body.content is not None
    result = await eshield.import_threat_feed(
        session,
        content=body.content,
        source=body.source or "upload",
        format=body.format,
        confidence=body.confidence,
        actor=key.actor,
        request_id=request_id,
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
    offset: int = Query(default=0, ge=0, le=MAX_ID),
) -> QuarantineList:
    """Quarantines in force (or, with ``status``, past ones)."""
    result = await eshield.list_quarantines(session, status=status, limit=limit, offset=offset)
    return QuarantineList(
        quarantines=[QuarantineRead(**q) for q in result["quarantines"]], total=result["total"]
    )


@router.delete("/eshield/quarantine/{quarantine_id}", response_model=QuarantineOne)
async def release(
    session: SessionDep, key: CurrentKey, request_id: RequestId, quarantine_id: int = id_path()
) -> QuarantineOne:
    """Release a quarantine (admin)."""
    row = await eshield.release_quarantine(
        session, quarantine_id=quarantine_id, actor=key.actor, request_id=request_id
    )
    return QuarantineOne(quarantine=QuarantineRead(**row))
