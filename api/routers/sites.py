"""Sites: what Sentry V monitors and the VaultShield proxy protects."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import Ok, id_path
from tools import sites as site_service

router = make_router(tags=["sites"])


class SiteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2048, description="Public URL that is probed")
    upstream_url: str | None = Field(
        default=None, max_length=2048, description="What the VaultShield proxy forwards to"
    )
    allowlist: list[str] = Field(
        default_factory=list, max_length=1000, description="Addresses/CIDRs never blocked"
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class SiteUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    upstream_url: str | None = Field(default=None, max_length=2048)
    allowlist: list[str] | None = Field(default=None, max_length=1000)
    metadata: dict[str, Any] | None = None


class SiteRead(BaseModel):
    id: int
    name: str
    url: str
    upstream_url: str | None
    allowlist: list[str]
    shield_mode: bool
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


class SiteList(Ok):
    sites: list[SiteRead]


class SiteOne(Ok):
    site: SiteRead


@router.get("/sites", response_model=SiteList)
async def list_sites(session: SessionDep) -> SiteList:
    """List every site with its protection settings."""
    return SiteList(sites=[SiteRead(**s) for s in await site_service.list_all_sites(session)])


@router.post("/sites", response_model=SiteOne, status_code=201)
async def create_site(
    body: SiteCreate, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> SiteOne:
    """Create a site."""
    site = await site_service.create_site(
        session, fields=body.model_dump(), actor=key.actor, request_id=request_id
    )
    return SiteOne(site=SiteRead(**site))


@router.get("/sites/{site_id}", response_model=SiteOne)
async def get_site(session: SessionDep, site_id: int = id_path()) -> SiteOne:
    """One site."""
    return SiteOne(site=SiteRead(**await site_service.get_site(session, site_id=site_id)))


@router.patch("/sites/{site_id}", response_model=SiteOne)
async def update_site(
    body: SiteUpdate,
    session: SessionDep,
    key: CurrentKey,
    request_id: RequestId,
    site_id: int = id_path(),
) -> SiteOne:
    """Change a site (only the fields given)."""
    site = await site_service.update_site(
        session,
        site_id=site_id,
        fields=body.model_dump(exclude_unset=True),
        actor=key.actor,
        request_id=request_id,
    )
    return SiteOne(site=SiteRead(**site))


@router.delete("/sites/{site_id}", response_model=SiteOne)
async def delete_site(
    session: SessionDep, key: CurrentKey, request_id: RequestId, site_id: int = id_path()
) -> SiteOne:
    """Delete a site and its site-specific rules (admin)."""
    site = await site_service.delete_site(
        session, site_id=site_id, actor=key.actor, request_id=request_id
    )
    return SiteOne(site=SiteRead(**site))
