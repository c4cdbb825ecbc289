"""Threat feed parsers: plain lists, CSV and JSON block lists, STIX 2.1 bundles.

Every parser reads the whole feed before anything is stored and raises ``BadRequest`` naming
the first bad lines, so a malformed feed imports nothing. Shapes understood:

- plain: one indicator per line; ``#`` and ``;`` start comments (FireHOL, Spamhaus DROP text).
- csv: abuse.ch exports (Feodo Tracker ``dst_ip``, URLhaus ``url``, MalwareBazaar
  ``sha256_hash``; ``#`` comment lines, the header may be commented out) or any CSV with a
  column named ip/ip_address/cidr/domain/host/url/sha256/md5/sha1/indicator/value.
- json: Spamhaus DROP NDJSON (``{"cidr": ...}`` per line, a final metadata line), abuse.ch
  JSON (a list of objects, ThreatFox ``{"data": [{"ioc": ...}]}`` or its dict of lists).
- stix: a STIX 2.1 bundle; indicators with simple ``[ipv4-addr|ipv6-addr|domain-name|url|file
  hashes] = '...'`` comparisons, and the matching cyber-observable objects.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from models.errors import BadRequest

Format = Literal["auto", "plain", "csv", "json", "stix"]
FORMATS = ("auto", "plain", "csv", "json", "stix")
MAX_ERRORS_SHOWN = 5
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.[a-z]{2,63}$"
)
_HASH_LENGTHS = {32, 40, 64}
_CSV_COLUMNS = (
    "dst_ip",
    "ip_address",
    "ip",
    "ipaddress",
    "cidr",
    "network",
    "sha256_hash",
    "sha256",
    "sha1_hash",
    "sha1",
    "md5_hash",
    "md5",
    "domain",
    "hostname",
    "host",
    "url",
    "ioc",
    "indicator",
    "value",
)
_STIX_TERM = re.compile(
    r"(ipv4-addr|ipv6-addr|domain-name|url|file):(value|hashes\.'?[A-Za-z0-9-]+'?)\s*=\s*'([^']*)'"
)


@dataclass(frozen=True)
class ParsedIndicator:
    type: str  # ip, cidr, domain, hash
    value: str
    confidence: int | None = None
    expires_at: dt.datetime | None = None


def classify(token: str) -> tuple[str, str]:
    """(type, normalised value) of one indicator; ValueError when it is none of them."""
    text = token.strip().strip('"').strip()
    if not text:
        raise ValueError("empty indicator")
    if "://" in text:
        host = urlsplit(text).hostname
        if not host:
            raise ValueError(f"URL without a host: {text!r}")
        text = host
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            if net.num_addresses == 1:
                return "ip", str(net.network_address)
            return "cidr", str(net)
        return "ip", str(ipaddress.ip_address(text))
    except ValueError:
        pass
    lowered = text.lower().rstrip(".")
    if len(lowered) in _HASH_LENGTHS and re.fullmatch(r"[0-9a-f]+", lowered):
        return "hash", lowered
    if HOSTNAME_RE.match(lowered):
        return "domain", lowered
    raise ValueError(f"not an IP, CIDR, domain or file hash: {text[:80]!r}")


class _Collector:
    """Gathers indicators and line-numbered errors; ``finish`` raises if any line was bad."""

    def __init__(self) -> None:
        self.items: list[ParsedIndicator] = []
        self.errors: list[str] = []

    def add(self, where: str, token: Any, **extra: Any) -> None:
        try:
            kind, value = classify(str(token))
        except ValueError as exc:
            self.errors.append(f"{where}: {exc}")
            return
        self.items.append(ParsedIndicator(kind, value, **extra))

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def finish(self, fmt: str) -> list[ParsedIndicator]:
        if self.errors:
            shown = "; ".join(self.errors[:MAX_ERRORS_SHOWN])
            more = len(self.errors) - MAX_ERRORS_SHOWN
            suffix = f" (and {more} more)" if more > 0 else ""
            raise BadRequest(
                f"malformed {fmt} feed, nothing imported: {shown}{suffix}",
                fields=["content"],
                code="FEED_MALFORMED",
            )
        if not self.items:
            raise BadRequest(f"the {fmt} feed holds no indicators", code="FEED_EMPTY")
        return self.items


def parse_plain(text: str) -> list[ParsedIndicator]:
    out = _Collector()
    for number, line in enumerate(text.splitlines(), 1):
        content = re.split(r"[#;]", line, maxsplit=1)[0].strip()
        if content:
            out.add(f"line {number}", content.split()[0] if " " in content else content)
    return out.finish("plain")


def parse_csv(text: str) -> list[ParsedIndicator]:
    out = _Collector()
    lines = text.splitlines()
    header: list[str] | None = None
    column: int | None = None
    for number, row in _csv_rows(lines):
        lowered = [c.strip().strip('"').lower() for c in row]
        if column is None:
            found = next((lowered.index(name) for name in _CSV_COLUMNS if name in lowered), None)
            if found is not None:
                header, column = lowered, found
                continue
            column = 0  # no header: the first column holds the indicator
        if column >= len(row):
            out.fail(f"line {number}", f"expected at least {column + 1} columns")
            continue
        out.add(f"line {number}", row[column])
    del header
    return out.finish("csv")


def _csv_rows(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            # abuse.ch comment out the header line: "# first_seen_utc,dst_ip,..."
            candidate = stripped.lstrip("#").strip()
            if "," in candidate and any(name in candidate.lower() for name in _CSV_COLUMNS):
                yield number, next(csv.reader([candidate]))
            continue
        yield number, next(csv.reader(io.StringIO(line)))


def _json_records(text: str) -> Iterable[tuple[str, Any]]:
    stripped = text.strip()
    try:
        document = json.loads(stripped)
    except json.JSONDecodeError:
        document = None
        for number, line in enumerate(stripped.splitlines(), 1):  # NDJSON (Spamhaus DROP)
            if line.strip():
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"line {number}", ValueError(f"invalid JSON ({exc.msg})")
        return
    if isinstance(document, dict) and "data" in document:
        document = document["data"]
    if isinstance(document, dict):  # ThreatFox export: {"id": [ {...} ], ...}
        document = [
            r
            for value in document.values()
            for r in (value if isinstance(value, list) else [value])
        ]
    if not isinstance(document, list):
        yield "document", ValueError("expected a JSON array, an object with 'data', or NDJSON")
        return
    for index, record in enumerate(document):
        yield f"item {index}", record


def parse_json(text: str) -> list[ParsedIndicator]:
    out = _Collector()
    for where, record in _json_records(text):
        if isinstance(record, ValueError):
            out.fail(where, str(record))
        elif isinstance(record, str):
            out.add(where, record)
        elif isinstance(record, dict):
            if record.get("type") == "metadata":
                continue
            key = next((k for k in _CSV_COLUMNS if record.get(k)), None)
            if key is None:
                out.fail(
                    where, "no indicator field (cidr, ip_address, ioc, domain, sha256_hash...)"
                )
                continue
            value = str(record[key])
            if key == "ioc" and ":" in value and value.count(":") == 1 and "://" not in value:
                value = value.split(":", 1)[0]  # ThreatFox "ip:port"
            out.add(where, value, confidence=_confidence(record.get("confidence_level")))
        else:
            out.fail(where, "expected an object or a string")
    return out.finish("json")


def _confidence(value: Any) -> int | None:
    try:
        return max(0, min(100, int(value))) if value is not None else None
    except (TypeError, ValueError):
        return None


def parse_stix(text: str) -> list[ParsedIndicator]:
    import stix2
    from stix2.exceptions import STIXError

    out = _Collector()
    try:
        bundle = stix2.parse(text, allow_custom=True)
    except (STIXError, ValueError, json.JSONDecodeError) as exc:
        raise BadRequest(
            f"malformed STIX bundle, nothing imported: {exc}",
            fields=["content"],
            code="FEED_MALFORMED",
        ) from None
    objects = getattr(bundle, "objects", None) or [bundle]
    for index, obj in enumerate(objects):
        where = f"object {index} ({obj.get('id', obj.get('type'))})"
        kind = obj.get("type")
        if kind == "indicator":
            terms = _STIX_TERM.findall(str(obj.get("pattern", "")))
            if not terms:
                continue  # patterns we do not model (e.g. process names) are skipped, not errors
            expires = obj.get("valid_until")
            for _object, _path, value in terms:
                out.add(
                    where,
                    value,
                    confidence=_confidence(obj.get("confidence")),
                    expires_at=expires.astimezone(dt.UTC) if expires is not None else None,
                )
        elif kind in ("ipv4-addr", "ipv6-addr", "domain-name", "url"):
            out.add(where, obj.get("value", ""))
        elif kind == "file":
            for digest in (obj.get("hashes") or {}).values():
                out.add(where, digest)
    return out.finish("stix")


def detect_format(text: str) -> str:
    stripped = text.lstrip()
    if stripped.startswith("{") and '"type"' in stripped[:2000] and "bundle" in stripped[:2000]:
        return "stix"
    if stripped.startswith(("{", "[")):
        return "json"
    first = next((ln for ln in stripped.splitlines() if ln.strip() and not ln.startswith("#")), "")
    return "csv" if "," in first else "plain"


def parse_feed(text: str, fmt: str = "auto") -> tuple[str, list[ParsedIndicator]]:
    """(format used, de-duplicated indicators); BadRequest when any part is malformed."""
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}", fields=["format"])
    used = detect_format(text) if fmt == "auto" else fmt
    parser = {"plain": parse_plain, "csv": parse_csv, "json": parse_json, "stix": parse_stix}[used]
    unique: dict[tuple[str, str], ParsedIndicator] = {}
    for item in parser(text):
        unique.setdefault((item.type, item.value), item)
    return used, list(unique.values())
