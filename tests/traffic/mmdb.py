"""A tiny MaxMind DB (MMDB v2) writer, enough to make an IPv4 country database for tests."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any


def _control(type_: int, size: int) -> bytes:
    assert size < 29
    if type_ <= 7:
        return bytes([(type_ << 5) | size])
    return bytes([size, type_ - 7])


def _uint(type_: int, value: int) -> bytes:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big") if value else b""
    return _control(type_, len(raw)) + raw


def encode(value: Any) -> bytes:
    if isinstance(value, str):
        raw = value.encode()
        return _control(2, len(raw)) + raw
    if isinstance(value, tuple):  # (type number, int) for the metadata's exact integer types
        return _uint(value[0], value[1])
    if isinstance(value, int):
        return _uint(6, value)  # uint32
    if isinstance(value, dict):
        out = _control(7, len(value))
        for key, item in value.items():
            out += encode(key) + encode(item)
        return out
    if isinstance(value, list):
        return _control(11, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(type(value))


def write_country_mmdb(path: Any, networks: dict[str, str]) -> None:
    """Write an IPv4 MMDB mapping each network to {"country": {"iso_code": CC}}."""
    data = b""
    offsets: dict[str, int] = {}
    for code in sorted(set(networks.values())):
        offsets[code] = len(data)
        data += encode({"country": {"iso_code": code}})
    nodes: list[list[Any]] = [[None, None]]
    for cidr, code in networks.items():
        net = ipaddress.ip_network(cidr)
        bits, node = int(net.network_address), 0
        for depth in range(net.prefixlen):
            bit = (bits >> (31 - depth)) & 1
            if depth == net.prefixlen - 1:
                nodes[node][bit] = ("data", offsets[code])
            else:
                child = nodes[node][bit]
                if not isinstance(child, int):
                    nodes.append([None, None])
                    child = nodes[node][bit] = len(nodes) - 1
                node = child
    count = len(nodes)

    def record(value: Any) -> int:
        if value is None:
            return count
        if isinstance(value, int):
            return value
        return count + 16 + value[1]

    tree = b"".join(
        struct.pack(">I", record(left))[1:] + struct.pack(">I", record(right))[1:]
        for left, right in nodes
    )
    metadata = {
        "node_count": (6, count),
        "record_size": (5, 24),
        "ip_version": (5, 4),
        "database_type": "Test-Country",
        "languages": ["en"],
        "binary_format_major_version": (5, 2),
        "binary_format_minor_version": (5, 0),
        "build_epoch": (9, 1_700_000_000),
        "description": {"en": "test"},
    }
    with open(path, "wb") as handle:
        handle.write(tree + b"\x00" * 16 + data + b"\xab\xcd\xefMaxMind.com" + encode(metadata))
