"""Dependencies declared once and reused by every router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.security import Principal
from models.db import get_database


async def _session() -> AsyncIterator[AsyncSession]:
    async with get_database().session() as session:
        yield session


def _principal(request: Request) -> Principal:
    return request.state.principal  # set by ScopedRoute before the endpoint runs


def _request_id(request: Request) -> str:
    return str(request.state.request_id)


SessionDep = Annotated[AsyncSession, Depends(_session)]
CurrentKey = Annotated[Principal, Depends(_principal)]
RequestId = Annotated[str, Depends(_request_id)]
