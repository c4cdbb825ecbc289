# ruff: noqa: ASYNC109  (the catalog mandates a `timeout` argument; it is enforced inside)
"""Remote execution: one command on one server (or many), over pooled SSH or a local subprocess.

Every execution, allowed or refused, is a ``command_executed`` ledger entry holding the command,
the server, the exit code (or error code) and a SHA-256 of each full output stream. Outputs
returned are capped (``exec_max_output_bytes``) with a ``truncated`` flag; the hashes cover
everything the command wrote. A timeout kills the whole process group, locally or remotely.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh
from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models import servers as server_repo
from models.crypto import decrypt_secret
from models.db import get_database
from models.errors import BadRequest, ExecFlowError, NotFound, PolicyDenied
from models.settings import get_settings
from tools.command_policy import check_command_policy, is_read_only_command
from tools.ssh import (
    CommandTimeout,
    HostUnreachable,
    Pooled,
    SSHPool,
    Target,
    kill_group,
    wrap_for_group_kill,
)

__all__ = [
    "check_command_policy",
    "execute_command",
    "execute_fanout",
    "is_read_only_command",
    "stream_command",
]

log = logging.getLogger("execflow.executor")
MAX_TIMEOUT = 300
Sink = Callable[[str, str], None]  # (stream name, one line of text)
_READ = 65_536


@dataclass(frozen=True)
class ServerRef:
    """What an execution needs of a server, detached from any database session."""

    id: int
    name: str
    transport: str
    target: Target
    pinned: bool


def server_ref(server: server_repo.Server) -> ServerRef:
    credential = (
        decrypt_secret(server.credential_encrypted) if server.credential_encrypted else None
    )
    target = Target(
        host=server.host,
        port=server.port,
        username=server.username,
        credential_kind=server.credential_kind,
        credential=credential,
        host_key=server.host_key,
        trust_on_first_use=server.trust_on_first_use,
        server_id=server.id,
    )
    return ServerRef(server.id, server.name, server.transport, target, bool(server.host_key))


class Capture:
    """Keeps the first ``limit`` bytes of a stream, hashes all of it, and emits whole lines."""

    def __init__(self, name: str, limit: int, sink: Sink | None) -> None:
        self.name, self.limit, self.sink = name, limit, sink
        self.kept = bytearray()
        self.digest = hashlib.sha256()
        self.total = 0
        self._partial = b""

    def feed(self, data: bytes) -> None:
        self.digest.update(data)
        self.total += len(data)
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += data[:room]
        if self.sink is not None:
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                self.sink(self.name, line.decode(errors="replace"))
            if len(self._partial) > self.limit:  # a newline-less flood: emit what we have
                self.sink(self.name, self._partial.decode(errors="replace"))
                self._partial = b""

    def finish(self) -> None:
        if self.sink is not None and self._partial:
            self.sink(self.name, self._partial.decode(errors="replace"))
            self._partial = b""

    @property
    def text(self) -> str:
        return self.kept.decode(errors="replace")

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)


def _result(exit_code: int, out: Capture, err: Capture, started: float) -> dict[str, Any]:
    return {
        "exit_code": exit_code,
        "stdout": out.text,
        "stderr": err.text,
        "truncated": out.truncated or err.truncated,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "stdout_sha256": out.digest.hexdigest(),
        "stderr_sha256": err.digest.hexdigest(),
    }


async def _pump(reader: Any, capture: Capture) -> None:
    while True:
        data = await reader.read(_READ)
        if not data:
            break
        capture.feed(data)
    capture.finish()


async def run_local(command: str, *, timeout: float, sink: Sink | None = None) -> dict[str, Any]:
    """Run ``command`` with /bin/sh here, in its own session; kill the group on timeout."""
    limit = get_settings().exec_max_output_bytes
    out, err = Capture("stdout", limit, sink), Capture("stderr", limit, sink)
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err))
            code = await proc.wait()
    except TimeoutError:
        await _kill_local_group(proc)
        raise CommandTimeout(
            f"command timed out after {timeout:g}s; its process group was terminated"
        ) from None
    return _result(code, out, err, started)


async def _kill_local_group(proc: asyncio.subprocess.Process) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.5)
            return


async def run_ssh(
    pool: SSHPool, target: Target, command: str, *, timeout: float, sink: Sink | None = None
) -> tuple[dict[str, Any], str | None]:
    """Run over the pooled connection (reconnecting once if it dropped) -> (result, host key)."""
    for attempt in (1, 2):
        reused = pool.connects
        async with pool.session(target) as pooled:
            fresh = pool.connects != reused
            try:
                return await _run_on(pooled, command, timeout, sink), pooled.host_key
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, BrokenPipeError) as exc:
                await pool.discard(target=target)
                if fresh or attempt == 2:
                    raise HostUnreachable(f"connection to {target.host} failed: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def _run_on(
    pooled: Pooled, command: str, timeout: float, sink: Sink | None
) -> dict[str, Any]:
    limit = get_settings().exec_max_output_bytes
    out, err = Capture("stdout", limit, sink), Capture("stderr", limit, sink)
    started = time.perf_counter()
    proc = await pooled.conn.create_process(wrap_for_group_kill(command), encoding=None)
    proc.stdin.write_eof()
    pid: int | None = None
    try:
        async with asyncio.timeout(timeout):
            header = await proc.stdout.readline()  # the pid line wrap_for_group_kill prints
            with contextlib.suppress(ValueError):
                pid = int(header.strip())
            await asyncio.gather(_pump(proc.stdout, out), _pump(proc.stderr, err))
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(Exception):
            proc.send_signal("TERM")
        if pid is not None:
            await kill_group(pooled, pid)
        proc.close()
        raise CommandTimeout(
            f"command timed out after {timeout:g}s; the remote process group was terminated"
        ) from None
    code = proc.returncode
    if code is None:
        code = -1
    elif code < 0:  # killed by a signal: report as a shell would
        code = 128 - code
    return _result(code, out, err, started)


_pool: SSHPool | None = None


def get_pool() -> SSHPool:
    global _pool
    if _pool is None:
        _pool = SSHPool(handshakes_per_host=get_settings().ssh_handshakes_per_host)
    return _pool


async def close_pool() -> None:
    global _pool
    if _pool is not None:
        await _pool.close()
        _pool = None


async def run_on_server(
    ref: ServerRef, command: str, *, timeout: float, sink: Sink | None = None
) -> dict[str, Any]:
    """Run without policy checks or ledger (callers do both); pins a first-use host key."""
    if ref.transport == "local":
        return await run_local(command, timeout=timeout, sink=sink)
    result, host_key = await run_ssh(get_pool(), ref.target, command, timeout=timeout, sink=sink)
    if host_key and not ref.pinned and ref.target.trust_on_first_use:
        await _pin_host_key(ref.id, host_key)
    return result


async def _pin_host_key(server_id: int, host_key: str) -> None:
    async with get_database().session() as session:
        server = await server_repo.get_server(session, server_id)
        if server is not None and not server.host_key:
            server.host_key = host_key
            log.info("pinned host key of server %s on first use", server_id)
    if server is not None:
        await ledger.record(
            "server_host_key_pinned",
            actor="system",
            server_id=server_id,
            target=server.name,
            result={"host_key": host_key},
        )


def check_timeout(timeout: float) -> None:
    if not 0 < timeout <= MAX_TIMEOUT:
        raise BadRequest(f"timeout must be between 1 and {MAX_TIMEOUT} seconds", fields=["timeout"])


async def _record(
    ref: ServerRef,
    command: str,
    timeout: float,
    actor: str,
    request_id: str | None,
    result: dict[str, Any],
) -> None:
    await ledger.record(
        "command_executed",
        actor=actor,
        server_id=ref.id,
        target=ref.name,
        params={"command": command, "timeout": timeout, "transport": ref.transport},
        result=result,
        request_id=request_id,
    )


async def _admit(
    session: AsyncSession,
    *,
    server_id: int,
    command: str,
    timeout: float,
    actor: str,
    request_id: str | None,
) -> ServerRef:
    """Load the server and check timeout and policy; a refusal is audited, then raised."""
    check_timeout(timeout)
    server = await server_repo.get_server(session, server_id)
    if server is None:
        raise NotFound(f"Server {server_id} not found")
    ref = server_ref(server)
    await _check_policy_audited(ref, command, timeout, actor, request_id)
    return ref


async def _check_policy_audited(
    ref: ServerRef, command: str, timeout: float, actor: str, request_id: str | None
) -> None:
    try:
        check_command_policy(command)
    except PolicyDenied as exc:
        refusal = {"allowed": False, "code": exc.code, "error": exc.message}
        await _record(ref, command, timeout, actor, request_id, refusal)
        raise


async def _run_recorded(
    ref: ServerRef,
    command: str,
    timeout: float,
    actor: str,
    request_id: str | None,
    sink: Sink | None = None,
) -> dict[str, Any]:
    try:
        result = await run_on_server(ref, command, timeout=timeout, sink=sink)
    except ExecFlowError as exc:
        failure = {"allowed": True, "code": exc.code, "error": exc.message}
        await _record(ref, command, timeout, actor, request_id, failure)
        raise
    summary = {k: v for k, v in result.items() if k not in {"stdout", "stderr"}}
    await _record(ref, command, timeout, actor, request_id, {"allowed": True, **summary})
    return result


async def execute_command(
    session: AsyncSession,
    *,
    server_id: int,
    command: str,
    timeout: float = 30,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Run ``command`` on a server -> {exit_code, stdout, stderr, truncated, duration_ms,
    stdout_sha256, stderr_sha256}; audited whether allowed, refused or failed."""
    ref = await _admit(
        session,
        server_id=server_id,
        command=command,
        timeout=timeout,
        actor=actor,
        request_id=request_id,
    )
    return await _run_recorded(ref, command, timeout, actor, request_id)


async def stream_command(
    session: AsyncSession,
    *,
    server_id: int,
    command: str,
    timeout: float = 30,
    actor: str,
    request_id: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Admit now (so refusals are plain errors), then return a stream of events:
    ``{"event": "stdout"|"stderr", "data": line}`` as lines arrive, then one ``result``
    (the execute_command dict) or ``error`` ({code, message}) event."""
    ref = await _admit(
        session,
        server_id=server_id,
        command=command,
        timeout=timeout,
        actor=actor,
        request_id=request_id,
    )
    return _stream(ref, command, timeout, actor, request_id)


async def _stream(
    ref: ServerRef, command: str, timeout: float, actor: str, request_id: str | None
) -> AsyncIterator[dict[str, Any]]:
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def sink(stream: str, line: str) -> None:
        queue.put_nowait({"event": stream, "data": line})

    async def run() -> None:
        try:
            result = await _run_recorded(ref, command, timeout, actor, request_id, sink)
            queue.put_nowait({"event": "result", "data": result})
        except ExecFlowError as exc:
            queue.put_nowait({"event": "error", "data": {"code": exc.code, "message": exc.message}})
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (event := await queue.get()) is not None:
            yield event
    finally:
        if not task.done():  # the client went away: let the command finish and be audited
            await asyncio.shield(task)


async def execute_fanout(
    session: AsyncSession,
    *,
    command: str,
    server_ids: Sequence[int] | None = None,
    tag: str | None = None,
    timeout: float = 30,
    concurrency: int = 50,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Run one command on several servers (ids and/or a tag), ``concurrency`` at a time;
    one result (or error) per server, each audited like execute_command."""
    check_timeout(timeout)
    if not server_ids and not tag:
        raise BadRequest("give server_ids or tag", fields=["server_ids", "tag"])
    if not 1 <= concurrency <= 200:
        raise BadRequest("concurrency must be between 1 and 200", fields=["concurrency"])
    chosen: dict[int, server_repo.Server] = {}
    for sid in server_ids or ():
        server = await server_repo.get_server(session, sid)
        if server is None:
            raise NotFound(f"Server {sid} not found")
        chosen[server.id] = server
    if tag:
        for server in await server_repo.list_servers(session, tag=tag):
            chosen[server.id] = server
    refs = [server_ref(s) for s in chosen.values()]
    if not refs:
        raise NotFound(f"no server carries the tag {tag!r}")
    try:
        check_command_policy(command)
    except PolicyDenied:
        for ref in refs:
            with contextlib.suppress(PolicyDenied):
                await _check_policy_audited(ref, command, timeout, actor, request_id)
        raise
    gate = asyncio.Semaphore(concurrency)
    started = time.perf_counter()

    async def one(ref: ServerRef) -> dict[str, Any]:
        async with gate:
            try:
                result = await _run_recorded(ref, command, timeout, actor, request_id)
            except ExecFlowError as exc:
                error = {"code": exc.code, "message": exc.message}
                return {"server_id": ref.id, "name": ref.name, "ok": False, "error": error}
            return {"server_id": ref.id, "name": ref.name, "ok": result["exit_code"] == 0, **result}

    results = await asyncio.gather(*(one(ref) for ref in refs))
    return {
        "results": list(results),
        "succeeded": sum(1 for r in results if r["ok"]),
        "failed": sum(1 for r in results if not r["ok"]),
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
