"""The network's outermost edge, faked for adversarial tests: DNS answers and an egress guard.

``FakeDns`` answers names under ``.rebind.test`` with scripted addresses (one answer set per
lookup, the last repeating, so a name can change its answer between two lookups: rebinding) and
refuses every other name, so no test query reaches a real resolver. ``Egress`` refuses, and
records, any TCP connection to an address outside 127.0.0.0/8 and ::1, so a guard that failed
would show up as a recorded attempt instead of a packet leaving the machine. Both patch the
event loop (and the blocking socket API), below every HTTP client ExecFlow uses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

FAKE_SUFFIX = ".rebind.test"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@dataclass
class FakeDns:
    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    def set(self, name: str, *answer_sets: list[str]) -> None:
        """``name`` answers ``answer_sets[0]`` first, then the next, the last one repeating."""
        self.answers[name] = [list(a) for a in answer_sets]

    def resolve(self, host: str) -> list[str]:
        self.lookups.append(host)
        sets = self.answers.get(host.rstrip("."))
        if not sets:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: not a test name")
        return sets.pop(0) if len(sets) > 1 else sets[0]


@dataclass
class Egress:
    attempts: list[str] = field(default_factory=list)

    def check(self, address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        if not is_loopback(host):
            self.attempts.append(host)
            raise OSError(101, f"test egress guard: connection to {host} refused")


def _infos(addresses: list[str], port: Any) -> list[Any]:
    out = []
    for a in addresses:
        family = socket.AF_INET6 if ":" in a else socket.AF_INET
        sockaddr = (a, int(port or 0), 0, 0) if family == socket.AF_INET6 else (a, int(port or 0))
        out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
    return out


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


@pytest.fixture
def netguard(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeDns, Egress]]:
    """(fake DNS, egress guard) installed for one test."""
    dns, egress = FakeDns(), Egress()
    real_getaddrinfo = asyncio.base_events.BaseEventLoop.getaddrinfo
    real_sock_connect = asyncio.selector_events.BaseSelectorEventLoop.sock_connect
    real_connect = socket.socket.connect

    async def getaddrinfo(self: Any, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host or "")
        if name.rstrip(".").endswith(FAKE_SUFFIX):
            return _infos(dns.resolve(name), port)
        if name and not _is_literal(name) and name != "localhost":
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: no real DNS in this test")
        return await real_getaddrinfo(self, host, port, *args, **kwargs)

    async def sock_connect(self: Any, sock: Any, address: Any) -> Any:
        egress.check(address)
        return await real_sock_connect(self, sock, address)

    def connect(sock: Any, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            egress.check(address)
        return real_connect(sock, address)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(asyncio.selector_events.BaseSelectorEventLoop, "sock_connect", sock_connect)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield dns, egress
