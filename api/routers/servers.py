"""Servers: the registry of managed hosts (issue 4 adds create, update, execute)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SessionDep
from api.routing import make_router
from api.schemas import Ok, id_path
from models import servers as server_repo
from models.errors import NotFound

router = make_router(tags=["servers"])


class ServerRead(BaseModel):
    """The reference's shape (id, name, ip, status) plus metadata. Credentials never appear."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    ip: str = Field(description="Host name or address")
    port: int
    username: str | None
    transport: str
    status: str
    tags: list[str]
    last_seen: dt.datetime | None
    metadata: dict[str, Any]

    @classmethod
    def of(cls, server: server_repo.Server) -> ServerRead:
        return cls(
            id=server.id,
            name=server.name,
            ip=server.host,
            port=server.port,
            username=server.username,
            transport=server.transport,
            status=server.status,
            tags=list(server.tags or []),
            last_seen=server.last_seen,
            metadata=dict(server.meta or {}),
        )


class ServerList(Ok):
    servers: list[ServerRead]


class ServerOne(Ok):
    server: ServerRead


@router.get("/servers", response_model=ServerList)
async def list_servers(
    session: SessionDep, tag: str | None = Query(default=None, max_length=100)
) -> ServerList:
    """List all servers with their current status and metadata."""
    rows = await server_repo.list_servers(session, tag=tag)
    return ServerList(servers=[ServerRead.of(s) for s in rows])


@router.get("/servers/{server_id}", response_model=ServerOne)
async def get_server(session: SessionDep, server_id: int = id_path("Server id")) -> ServerOne:
    """One server."""
    server = await server_repo.get_server(session, server_id)
    if server is None:
        raise NotFound(f"Server {server_id} not found")
    return ServerOne(server=ServerRead.of(server))
