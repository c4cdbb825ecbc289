"""Servers: the registry of managed hosts, command execution (plain, streamed, fan-out)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import Ok, RowId, id_path
from models import servers as server_repo
from models.settings import get_settings
from tools import executor, servers

router = make_router(tags=["servers"])
STREAM = {"x-scope": "write", "x-stream": True}


class ServerRead(BaseModel):
    """The reference's shape (id, name, ip, status) plus metadata. Credentials never appear."""

    id: int
    name: str
    ip: str = Field(description="Host name or address")
    port: int
    username: str | None
    transport: str
    status: str
    tags: list[str]
    last_seen: dt.datetime | None
    host_key: str | None = Field(description="The pinned public host key (not a secret)")
    trust_on_first_use: bool
    credential_kind: str | None = Field(description="private_key or password; never the value")
    metadata: dict[str, Any]


class ServerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    host: str = Field(min_length=1, max_length=255, description="IP address or host name")
    port: int = Field(default=22, ge=1, le=65535)
    username: str | None = Field(default=None, max_length=64)
    private_key: str | None = Field(default=None, max_length=20_000, description="OpenSSH PEM")
    password: str | None = Field(default=None, max_length=1024)
    host_key: str | None = Field(
        default=None, max_length=20_000, description="known_hosts line or SHA256: fingerprint"
    )
    trust_on_first_use: bool = False
    tags: list[str] = Field(default_factory=list, max_length=50)
    transport: Literal["ssh", "local"] = "ssh"


class ServerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    username: str | None = Field(default=None, max_length=64)
    private_key: str | None = Field(default=None, max_length=20_000)
    password: str | None = Field(default=None, max_length=1024)
    host_key: str | None = Field(default=None, max_length=20_000)
    trust_on_first_use: bool | None = None
    tags: list[str] | None = Field(default=None, max_length=50)
    transport: Literal["ssh", "local"] | None = None


class ExecuteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1, max_length=10_000, description="The shell command")
    timeout: float = Field(default=30, gt=0, le=300, description="Seconds (max 300)")


class FanoutRequest(ExecuteRequest):
    server_ids: list[RowId] | None = Field(default=None, max_length=1000)
    tag: str | None = Field(default=None, max_length=100)
    concurrency: int = Field(default=50, ge=1, le=200)


class ExecResult(Ok):
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool
    duration_ms: float
    stdout_sha256: str
    stderr_sha256: str


class ServerList(Ok):
    servers: list[ServerRead]


class ServerOne(Ok):
    server: ServerRead


class ServerStatus(Ok):
    server_id: int
    name: str
    status: str
    last_seen: str | None
    facts: dict[str, Any]
    probe_error: dict[str, Any] | None


class FanoutResult(Ok):
    results: list[dict[str, Any]]
    succeeded: int
    failed: int
    duration_ms: float


class Deleted(Ok):
    id: int
    name: str


@router.get("/servers", response_model=ServerList)
async def list_servers(
    session: SessionDep, tag: str | None = Query(default=None, max_length=100)
) -> ServerList:
    """List all servers with their current status and metadata."""
    rows = await server_repo.list_servers(session, tag=tag)
    return ServerList(servers=[ServerRead(**servers.server_view(s)) for s in rows])


@router.post("/servers", response_model=ServerOne, status_code=201)
async def create_server(
    body: ServerCreate, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> ServerOne:
    """Register a server. The credential is encrypted at rest and never returned."""
    view = await servers.create_server(
        session, **body.model_dump(), actor=key.actor, request_id=request_id
    )
    return ServerOne(server=ServerRead(**view))


@router.post("/servers/execute", response_model=FanoutResult)
async def execute_fanout(
    body: FanoutRequest, session: SessionDep, key: CurrentKey, request_id: RequestId
) -> FanoutResult:
    """Run one command on several servers (ids and/or a tag) with bounded concurrency."""
    result = await executor.execute_fanout(
        session,
        command=body.command,
        server_ids=body.server_ids,
        tag=body.tag,
        timeout=body.timeout,
        concurrency=body.concurrency,
        actor=key.actor,
        request_id=request_id,
    )
    return FanoutResult(**result)


@router.get("/servers/{server_id}", response_model=ServerOne)
async def get_server(session: SessionDep, server_id: int = id_path("Server id")) -> ServerOne:
    """One server."""
    return ServerOne(server=ServerRead(**await servers.get_server(session, server_id=server_id)))


@router.get("/servers/{server_id}/status", response_model=ServerStatus)
async def get_server_status(
    session: SessionDep,
    server_id: int = id_path(),
    refresh: bool = Query(default=False, description="Probe the server now"),
) -> ServerStatus:
    """Status (online/offline/unknown), last contact and facts from the latest probe."""
    status = await servers.get_server_status(session, server_id=server_id, refresh=refresh)
    return ServerStatus(**status)


@router.patch("/servers/{server_id}", response_model=ServerOne)
async def update_server(
    body: ServerUpdate,
    session: SessionDep,
    key: CurrentKey,
    request_id: RequestId,
    server_id: int = id_path(),
) -> ServerOne:
    """Change a server; a new credential or host key closes its pooled connections."""
    view = await servers.update_server(
        session,
        server_id=server_id,
        changes=body.model_dump(exclude_unset=True),
        actor=key.actor,
        request_id=request_id,
    )
    return ServerOne(server=ServerRead(**view))


@router.delete("/servers/{server_id}", response_model=Deleted)
async def delete_server(
    session: SessionDep, key: CurrentKey, request_id: RequestId, server_id: int = id_path()
) -> Deleted:
    """Remove a server (admin)."""
    gone = await servers.delete_server(
        session, server_id=server_id, actor=key.actor, request_id=request_id
    )
    return Deleted(**gone)


@router.post("/servers/{server_id}/execute", response_model=ExecResult)
async def execute_command(
    body: ExecuteRequest,
    session: SessionDep,
    key: CurrentKey,
    request_id: RequestId,
    server_id: int = id_path(),
) -> ExecResult:
    """Execute a command; logged to the audit trail whether it runs, is refused or fails."""
    result = await executor.execute_command(
        session,
        server_id=server_id,
        command=body.command,
        timeout=body.timeout,
        actor=key.actor,
        request_id=request_id,
    )
    return ExecResult(**result)


@router.post("/servers/{server_id}/execute/stream", openapi_extra=STREAM)
async def execute_stream(
    body: ExecuteRequest,
    session: SessionDep,
    key: CurrentKey,
    request_id: RequestId,
    server_id: int = id_path(),
) -> StreamingResponse:
    """The same execution as Server-Sent Events: `stdout`/`stderr` events carry one line each,
    then one `result` (the execute body) or `error` ({code, message}) event ends the stream."""
    events = await executor.stream_command(
        session,
        server_id=server_id,
        command=body.command,
        timeout=body.timeout,
        actor=key.actor,
        request_id=request_id,
    )
    return StreamingResponse(
        _sse(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    async for event in events:
        yield f"event: {event['event']}\ndata: {json.dumps(event['data'])}\n\n"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Probe servers periodically while the API runs; close pooled SSH connections at the end."""
    interval = get_settings().server_probe_interval
    task = asyncio.create_task(servers.probe_forever(interval)) if interval > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await executor.close_pool()
