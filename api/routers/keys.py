"""API key management (admin only): create (shown once), list, revoke."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentKey, RequestId, SessionDep
from api.keys import create_api_key, revoke_api_key
from api.routing import ADMIN_ONLY, make_router
from api.schemas import Ok, id_path
from models.keys import ApiKey, list_keys

router = make_router(tags=["keys"])


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scope: Literal["read", "write", "admin"]
    plan: Literal["starter", "pro", "enterprise"] = "starter"
    rate_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    burst: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Enterprise: null means no burst cap"
    )


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    scope: str
    plan: str
    prefix: str
    last4: str
    rate_per_minute: int | None
    burst: int | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class KeyCreated(Ok):
    key: str = Field(description="The full API key. Shown once; store it now.")
    api_key: KeyRead


class KeyList(Ok):
    keys: list[KeyRead]


class KeyRevoked(Ok):
    api_key: KeyRead


@router.post("/keys", openapi_extra=ADMIN_ONLY, status_code=201, response_model=KeyCreated)
async def create_key(
    body: KeyCreate, session: SessionDep, principal: CurrentKey, request_id: RequestId
) -> KeyCreated:
    """Create an API key. The full key is in this response only."""
    row, key = await create_api_key(
        session, **body.model_dump(), actor=principal.actor, request_id=request_id
    )
    return KeyCreated(key=key, api_key=KeyRead.model_validate(row))


class KeyMe(Ok):
    api_key: KeyRead


@router.get("/keys/me", response_model=KeyMe)
async def get_own_key(session: SessionDep, principal: CurrentKey) -> KeyMe:
    """The calling key's own record (any scope): name, scope, plan, prefix."""
    row = await session.get(ApiKey, principal.key_id)
    assert row is not None  # authenticated a moment ago
    return KeyMe(api_key=KeyRead.model_validate(row))


@router.get("/keys", openapi_extra=ADMIN_ONLY, response_model=KeyList)
async def get_keys(session: SessionDep) -> KeyList:
    """List keys: prefix and last four characters only, never the key."""
    return KeyList(keys=[KeyRead.model_validate(k) for k in await list_keys(session)])


@router.delete("/keys/{key_id}", response_model=KeyRevoked)
async def delete_key(
    request: Request,
    session: SessionDep,
    principal: CurrentKey,
    request_id: RequestId,
    key_id: int = id_path("API key id"),
) -> KeyRevoked:
    """Revoke a key; it is refused from the next request on."""
    row = await revoke_api_key(session, key_id=key_id, actor=principal.actor, request_id=request_id)
    request.app.state.key_cache.forget(row.id)
    return KeyRevoked(api_key=KeyRead.model_validate(row))
