"""SSH connections: a pool that reuses, reconnects, bounds handshakes and verifies host keys.

One connection per server target is opened on first use and reused by every later call until
it drops (then the next call reconnects). Handshakes to one host are bounded by a semaphore, as
sshd's ``MaxStartups`` (10:30:100 by default) drops concurrent unauthenticated connections, and
sessions per connection are bounded below sshd's ``MaxSessions`` (10).

Host keys are verified inside the handshake, before any credential is sent: the expected key is a
known_hosts line (or a bare ``type base64`` public key) or a ``SHA256:`` fingerprint. A target
with neither and ``trust_on_first_use`` accepts the first key it sees; the caller pins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from models.errors import BadRequest, Conflict, ExecFlowError, UpstreamError

SESSIONS_PER_CONNECTION = 8  # below sshd's MaxSessions default of 10
CONNECT_TIMEOUT = 10.0


class CommandTimeout(ExecFlowError):
    status = 504
    default_code = "TIMEOUT"


class HostUnreachable(UpstreamError):
    default_code = "UNREACHABLE"


class AuthFailed(UpstreamError):
    default_code = "AUTH_FAILED"


class HostKeyMismatch(UpstreamError):
    default_code = "HOST_KEY_MISMATCH"


class UsernameRequired(Conflict):
    default_code = "USERNAME_REQUIRED"


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect. ``credential`` is plaintext: never log or return it."""

    host: str
    port: int = 22
    username: str | None = None
    credential_kind: str | None = None  # "private_key" | "password" | None
    credential: str | None = field(default=None, repr=False)
    host_key: str | None = None
    trust_on_first_use: bool = False
    server_id: int | None = None

    def pool_key(self) -> tuple[Any, ...]:
        secret = hashlib.sha256((self.credential or "").encode()).hexdigest()
        return (
            self.server_id,
            self.host,
            self.port,
            self.username,
            self.credential_kind,
            secret,
            self.host_key,
            self.trust_on_first_use,
        )


@dataclass(frozen=True)
class ExpectedHostKey:
    key: asyncssh.SSHKey | None = None
    fingerprint: str | None = None


def parse_host_key(text: str) -> ExpectedHostKey:
    """A known_hosts line, a ``type base64`` public key or a ``SHA256:`` fingerprint."""
    text = text.strip()
    if text.startswith("SHA256:"):
        if len(text) < 20 or " " in text:
            raise BadRequest("host_key fingerprint is malformed", fields=["host_key"])
        return ExpectedHostKey(fingerprint=text)
    tokens = text.split()
    if tokens and tokens[0].startswith("@"):
        raise BadRequest(
            "host_key markers (@cert-authority, @revoked) are not supported", fields=["host_key"]
        )
    for i, token in enumerate(tokens[:-1]):
        if token.startswith(("ssh-", "ecdsa-", "sk-")):
            try:
                key = asyncssh.import_public_key(f"{token} {tokens[i + 1]}")
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise BadRequest(
                    f"host_key is not a valid key: {exc}", fields=["host_key"]
                ) from exc
            return ExpectedHostKey(key=key)
    raise BadRequest(
        "host_key must be a known_hosts line or a SHA256: fingerprint", fields=["host_key"]
    )


def key_line(key: asyncssh.SSHKey) -> str:
    """``type base64`` of a public key, the form trust-on-first-use pins."""
    return key.export_public_key("openssh").decode().split("\n")[0].strip()


def fingerprint(key: asyncssh.SSHKey) -> str:
    return str(key.get_fingerprint("sha256"))


def check_private_key(text: str) -> None:
    """Raise BadRequest unless ``text`` is an unencrypted private key asyncssh can load."""
    try:
        asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BadRequest("private_key is not a usable private key", fields=["private_key"]) from exc


class _Client(asyncssh.SSHClient):
    """Verifies the server's host key during the handshake and notices a dropped connection."""

    def __init__(self, expected: ExpectedHostKey, tofu: bool) -> None:
        self.expected = expected
        self.tofu = tofu
        self.seen: asyncssh.SSHKey | None = None
        self.closed = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.seen = key
        if self.expected.key is not None:
            return bool(key.public_data == self.expected.key.public_data)
        if self.expected.fingerprint is not None:
            return fingerprint(key) == self.expected.fingerprint
        return self.tofu

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


@dataclass
class Pooled:
    conn: asyncssh.SSHClientConnection
    client: _Client
    sessions: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(SESSIONS_PER_CONNECTION)
    )

    @property
    def alive(self) -> bool:
        return not self.client.closed

    @property
    def host_key(self) -> str | None:
        return key_line(self.client.seen) if self.client.seen is not None else None


class SSHPool:
    """Open connections by target; at most ``handshakes_per_host`` handshakes at once per host."""

    def __init__(self, *, handshakes_per_host: int = 8) -> None:
        self.handshakes_per_host = handshakes_per_host
        self._conns: dict[tuple[Any, ...], Pooled] = {}
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}
        self._handshakes: dict[tuple[str, int], asyncio.Semaphore] = {}
        self.connects = 0  # handshakes completed: a pool that reuses keeps this low

    async def get(self, target: Target) -> Pooled:
        """An open connection to ``target``: the pooled one, or a new one if none is alive."""
        key = target.pool_key()
        pooled = self._conns.get(key)
        if pooled is not None and pooled.alive:
            return pooled
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            pooled = self._conns.get(key)
            if pooled is not None and pooled.alive:
                return pooled
            limit = self._handshakes.setdefault(
                (target.host, target.port), asyncio.Semaphore(self.handshakes_per_host)
            )
            async with limit:
                pooled = await _connect(target)
            self.connects += 1
            self._conns[key] = pooled
            return pooled

    @contextlib.asynccontextmanager
    async def session(self, target: Target) -> AsyncIterator[Pooled]:
        """A pooled connection with one of its session slots held for the block."""
        pooled = await self.get(target)
        async with pooled.sessions:
            yield pooled

    async def discard(self, *, server_id: int | None = None, target: Target | None = None) -> None:
        """Close pooled connections of a server (after an update or delete) or of one target."""
        doomed = [
            k
            for k in self._conns
            if (target is not None and k == target.pool_key())
            or (server_id is not None and k[0] == server_id)
        ]
        for k in doomed:
            pooled = self._conns.pop(k)
            pooled.conn.close()

    async def close(self) -> None:
        for pooled in self._conns.values():
            pooled.conn.close()
        for pooled in self._conns.values():
            with contextlib.suppress(Exception):
                await pooled.conn.wait_closed()
        self._conns.clear()


async def _connect(target: Target) -> Pooled:
    if not target.username:
        # asyncssh would fall back to the service's own OS user: never guess who to log in as.
        raise UsernameRequired(
            "this server has no SSH username: set one with PATCH /api/servers/{id}"
        )
    expected = parse_host_key(target.host_key) if target.host_key else ExpectedHostKey()
    if expected.key is None and expected.fingerprint is None and not target.trust_on_first_use:
        raise HostKeyMismatch("no host key is pinned for this server and trust_on_first_use is off")
    client = _Client(expected, target.trust_on_first_use)
    options: dict[str, Any] = {
        "username": target.username,
        # empty trusted/CA/revoked lists: asyncssh then asks _Client.validate_host_public_key
        "known_hosts": ([], [], []),
        "agent_path": None,
        "config": None,
        "client_keys": None,
        "password": None,
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalive_interval": 30,
    }
    if expected.key is not None:
        options["server_host_key_algs"] = [expected.key.get_algorithm()]
    if target.credential_kind == "private_key" and target.credential:
        options["client_keys"] = [asyncssh.import_private_key(target.credential)]
    elif target.credential_kind == "password" and target.credential:
        options["password"] = target.credential
    where = f"{target.host}:{target.port}"
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: client, target.host, target.port, **options
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        seen = fingerprint(client.seen) if client.seen is not None else "none"
        raise HostKeyMismatch(
            f"host key of {where} does not match the pinned key ({seen})"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise AuthFailed(f"authentication to {where} was refused") from exc
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise HostUnreachable(f"cannot reach {where}: {type(exc).__name__}") from exc
    return Pooled(conn=conn, client=client)


def wrap_for_group_kill(command: str) -> str:
    """Print the login shell's pid (its own process group: sshd setsid()s non-pty sessions)
    on the first stdout line, then exec the command in that process, so a timeout can kill
    the whole group."""
    return f"echo $$; exec /bin/sh -c {shlex.quote(command)}"


async def kill_group(pooled: Pooled, pid: int) -> None:
    """Terminate the remote process group ``pid`` (TERM, then KILL after half a second)."""
    script = f"kill -TERM -- -{pid} 2>/dev/null; sleep 0.5; kill -KILL -- -{pid} 2>/dev/null; true"
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pooled.conn.run(script, check=False), 10)
