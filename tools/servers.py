"""Servers: register, update and remove managed hosts; probe them for status and facts.

Credentials (an OpenSSH private key or a password) are encrypted at rest and never returned,
logged or audited. A server reached over SSH needs a pinned host key unless it opts into
trust-on-first-use, which pins the first key seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models import servers as server_repo
from models.crypto import encrypt_secret
from models.db import get_database, utcnow
from models.errors import BadRequest, Conflict, ExecFlowError, NotFound
from tools.executor import get_pool, run_on_server, server_ref
from tools.ssh import check_private_key, parse_host_key

log = logging.getLogger("execflow.servers")
TRANSPORTS = ("ssh", "local")
PROBE_TIMEOUT = 20
PROBE_SCRIPT = (
    "uname -sr; echo '--'; grep -E '^PRETTY_NAME=' /etc/os-release 2>/dev/null; echo '--'; "
    "cat /proc/uptime; echo '--'; cat /proc/loadavg; echo '--'; df -Pk / | tail -n 1; "
    "echo '--'; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo"
)


def server_view(server: server_repo.Server) -> dict[str, Any]:
    """The public shape: the reference's id, name, ip, status plus metadata; no credential."""
    return {
        "id": server.id,
        "name": server.name,
        "ip": server.host,
        "port": server.port,
        "username": server.username,
        "transport": server.transport,
        "status": server.status,
        "tags": list(server.tags or []),
        "last_seen": server.last_seen.isoformat() if server.last_seen else None,
        "host_key": server.host_key,
        "trust_on_first_use": server.trust_on_first_use,
        "credential_kind": server.credential_kind,
        "metadata": dict(server.meta or {}),
    }


async def list_servers(session: AsyncSession) -> dict[str, Any]:
    """Every server with its status and metadata."""
    return {"servers": [server_view(s) for s in await server_repo.list_servers(session)]}


async def get_server(session: AsyncSession, *, server_id: int) -> dict[str, Any]:
    """One server's public view."""
    return server_view(await _get(session, server_id))


async def _get(session: AsyncSession, server_id: int) -> server_repo.Server:
    server = await server_repo.get_server(session, server_id)
    if server is None:
        raise NotFound(f"Server {server_id} not found")
    return server


async def get_server_status(
    session: AsyncSession, *, server_id: int, refresh: bool = False
) -> dict[str, Any]:
    """A server's status, last contact and gathered facts; ``refresh`` probes it first."""
    server = await _get(session, server_id)
    if refresh:
        await probe_server(server_id)
        await session.refresh(server)
    meta = dict(server.meta or {})
    return {
        "server_id": server.id,
        "name": server.name,
        "status": server.status,
        "last_seen": server.last_seen.isoformat() if server.last_seen else None,
        "facts": meta.get("facts", {}),
        "probe_error": meta.get("probe_error"),
    }


def _check_access(
    transport: str, host_key: str | None, tofu: bool, credential_kind: str | None
) -> None:
    if transport not in TRANSPORTS:
        raise BadRequest("transport must be ssh or local", fields=["transport"])
    if transport == "ssh":
        if host_key:
            parse_host_key(host_key)
        elif not tofu:
            raise BadRequest(
                "host_key is required unless trust_on_first_use is true", fields=["host_key"]
            )
        if credential_kind is None:
            raise BadRequest("give private_key or password", fields=["private_key", "password"])


def _credential(private_key: str | None, password: str | None) -> tuple[str | None, str | None]:
    if private_key and password:
        raise BadRequest("give private_key or password, not both", fields=["private_key"])
    if private_key:
        check_private_key(private_key)
        return "private_key", encrypt_secret(private_key)
    if password:
        return "password", encrypt_secret(password)
    return None, None


async def create_server(
    session: AsyncSession,
    *,
    name: str,
    host: str,
    port: int = 22,
    username: str | None = None,
    private_key: str | None = None,
    password: str | None = None,
    host_key: str | None = None,
    trust_on_first_use: bool = False,
    tags: list[str] | None = None,
    transport: str = "ssh",
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Register a server; its credential is encrypted, its host key validated."""
    kind, token = _credential(private_key, password)
    _check_access(transport, host_key, trust_on_first_use, kind)
    server = server_repo.Server(
        name=name,
        host=host,
        port=port,
        username=username,
        credential_encrypted=token,
        credential_kind=kind,
        host_key=host_key.strip() if host_key else None,
        trust_on_first_use=trust_on_first_use,
        transport=transport,
        tags=list(tags or []),
        status="unknown",
        meta={},
    )
    session.add(server)
    await _commit_unique(session, name)
    view = server_view(server)
    await ledger.record(
        "server_created",
        actor=actor,
        server_id=server.id,
        target=server.name,
        params=_audit_fields(view),
        request_id=request_id,
    )
    return view


def _audit_fields(view: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("name", "ip", "port", "username", "transport", "tags", "trust_on_first_use")
    return {k: view[k] for k in keep} | {"credential_kind": view["credential_kind"]}


async def _commit_unique(session: AsyncSession, name: str) -> None:
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"a server named {name!r} already exists") from exc


async def update_server(
    session: AsyncSession,
    *,
    server_id: int,
    changes: Mapping[str, Any],
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Apply a partial update; a new credential or host key drops pooled connections."""
    server = await _get(session, server_id)
    changes = dict(changes)
    private_key, password = changes.pop("private_key", None), changes.pop("password", None)
    if private_key or password:
        server.credential_kind, server.credential_encrypted = _credential(private_key, password)
    field_map = {"ip": "host", "host": "host", "metadata": "meta"}
    for key in ("name", "host", "ip", "port", "transport", "tags", "trust_on_first_use"):
        if key in changes and changes[key] is None:
            raise BadRequest(f"{key} cannot be null", fields=[key])
    for key, value in changes.items():
        setattr(server, field_map.get(key, key), value)
    if changes.get("host_key"):
        server.host_key = str(changes["host_key"]).strip()
    _check_access(
        server.transport, server.host_key, server.trust_on_first_use, server.credential_kind
    )
    await _commit_unique(session, server.name)
    await get_pool().discard(server_id=server.id)
    audited = sorted(set(changes) | ({"credential"} if private_key or password else set()))
    await ledger.record(
        "server_updated",
        actor=actor,
        server_id=server.id,
        target=server.name,
        params={"changed": audited},
        request_id=request_id,
    )
    return server_view(server)


async def delete_server(
    session: AsyncSession, *, server_id: int, actor: str, request_id: str | None = None
) -> dict[str, Any]:
    """Remove a server and close its pooled connections."""
    server = await _get(session, server_id)
    name = server.name
    await session.delete(server)
    await session.commit()
    await get_pool().discard(server_id=server_id)
    await ledger.record(
        "server_deleted", actor=actor, server_id=server_id, target=name, request_id=request_id
    )
    return {"id": server_id, "name": name}


def parse_facts(stdout: str) -> dict[str, Any]:
    """Turn PROBE_SCRIPT's output into facts (missing parts are simply left out)."""
    parts = [p.strip() for p in stdout.split("--")]
    facts: dict[str, Any] = {}
    with contextlib.suppress(IndexError, ValueError):
        facts["kernel"] = parts[0]
        facts["os"] = parts[1].partition("=")[2].strip('"') or None
        facts["uptime_seconds"] = round(float(parts[2].split()[0]))
        facts["load"] = [float(x) for x in parts[3].split()[:3]]
        disk = parts[4].split()
        facts["disk_root"] = {
            "total_kb": int(disk[1]),
            "used_kb": int(disk[2]),
            "available_kb": int(disk[3]),
            "use_percent": int(disk[4].rstrip("%")),
        }
        mem = dict(line.split(":", 1) for line in parts[5].splitlines())
        facts["memory"] = {
            "total_kb": int(mem["MemTotal"].split()[0]),
            "available_kb": int(mem["MemAvailable"].split()[0]),
        }
    return facts


async def probe_server(server_id: int) -> str:
    """Connect, gather facts, and store status (online/offline), last_seen and facts."""
    async with get_database().session() as session:
        server = await _get(session, server_id)
        ref = server_ref(server)
    try:
        result = await run_on_server(ref, PROBE_SCRIPT, timeout=PROBE_TIMEOUT)
        status, facts, error = "online", parse_facts(result["stdout"]), None
    except ExecFlowError as exc:
        status, facts, error = "offline", None, {"code": exc.code, "message": exc.message}
    async with get_database().session() as session:
        current = await server_repo.get_server(session, server_id)
        if current is None:
            return status
        server = current
        meta = dict(server.meta or {})
        meta["probe_error"] = error
        if facts is not None:
            meta["facts"] = facts
            server.last_seen = utcnow()
        server.meta, server.status = meta, status
    return status


async def probe_all(*, concurrency: int = 20) -> dict[str, int]:
    """Probe every server, ``concurrency`` at a time; counts by resulting status."""
    async with get_database().session() as session:
        ids = [s.id for s in await server_repo.list_servers(session)]
    gate = asyncio.Semaphore(concurrency)

    async def one(sid: int) -> str:
        async with gate:
            try:
                return await probe_server(sid)
            except NotFound:
                return "deleted"

    statuses = await asyncio.gather(*(one(sid) for sid in ids))
    return {s: statuses.count(s) for s in set(statuses)}


async def probe_forever(interval: float) -> None:
    """The periodic probe run while the API is up (first pass after one interval)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await probe_all()
        except Exception:  # a failed pass must not end the loop; the next one retries
            log.exception("server probe pass failed")
