"""VaultShield: traffic rules and protection status (the proxy itself is ``execflow shield``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import MAX_ID, Ok, id_path
from tools import vaultshield

router = make_router(tags=["vaultshield"])

RuleType = Literal["ip_block", "user_agent_block", "rate_limit", "geo_block"]


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: RuleType
    value: str = Field(
        min_length=1,
        max_length=1024,
        description="IP/CIDR, user-agent substring or /regex/, '[KEY ]N/unit', country code",
    )
    action: Literal["block", "challenge", "log"] = "block"
    priority: int = Field(default=100, ge=1, le=1_000_000, description="1 = evaluated first")
    site_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="None: applies to every site"
    )


class RuleRead(BaseModel):
    id: int
    site_id: int | None
    type: str
    value: str
    action: str
    priority: int
    created_by: str
    created_at: str


class RuleOne(Ok):
    rule: RuleRead


class RuleList(Ok):
    rules: list[RuleRead]
    total: int


class StatusRead(Ok):
    model_config = ConfigDict(extra="allow")

    status: str
    active_rules: int
    sites: list[dict[str, Any]]
    traffic: dict[str, Any]


@router.get("/vaultshield/status", response_model=StatusRead)
async def vaultshield_status(session: SessionDep) -> StatusRead:
    """Protection status per site, active rule count and traffic for the last hour and day."""
    return StatusRead(**await vaultshield.get_vaultshield_status(session))


@router.get("/vaultshield/rules", response_model=RuleList)
async def list_rules(
    session: SessionDep,
    site_id: int | None = Query(default=None, ge=1, le=MAX_ID),
    type: RuleType | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(default=0, ge=0, le=MAX_ID),
) -> RuleList:
    """Rules in evaluation order."""
    result = await vaultshield.list_vaultshield_rules(
        session, site_id=site_id, type=type, limit=limit, offset=offset
    )
    return RuleList(rules=[RuleRead(**r) for r in result["rules"]], total=result["total"])


@router.post("/vaultshield/rules", response_model=RuleOne, status_code=201)
async def add_rule(
    body: RuleCreate, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> RuleOne:
    """Add a rule; running proxies apply it within a second."""
    rule = await vaultshield.add_vaultshield_rule(
        session, **body.model_dump(), actor=key.actor, request_id=request_id
    )
    return RuleOne(rule=RuleRead(**rule))


@router.delete("/vaultshield/rules/{rule_id}", response_model=RuleOne)
async def delete_rule(
    session: SessionDep, key: CurrentKey, request_id: RequestId, rule_id: int = id_path()
) -> RuleOne:
    """Remove a rule (admin)."""
    rule = await vaultshield.delete_vaultshield_rule(
        session, rule_id=rule_id, actor=key.actor, request_id=request_id
    )
    return RuleOne(rule=RuleRead(**rule))
