"""eShield: threat indicators (with feed importers) and quarantines enforced by every proxy.

A quarantine is a top-priority block in every VaultShield proxy from the moment it is stored
(``publish_rules_changed``). It refuses loopback, any site's allow-list and ExecFlow's own
addresses unless ``force`` is given (the API allows ``force`` to admin keys only). A quarantine
with a duration releases itself: proxies stop enforcing it at ``expires_at`` on their own, and
a delayed job marks it expired and writes the ledger entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import jobs, ledger
from models.db import session_scope, utcnow
from models.errors import BadRequest, Conflict, NotFound, UpstreamError
from models.settings import get_settings
from models.sites import Site
from models.traffic import Quarantine, ThreatIndicator
from tools.threatfeeds import HOSTNAME_RE, parse_feed
from tools.vaultshield.engine import parse_network
from tools.vaultshield.service import publish_rules_changed

INDICATOR_TYPES = ("ip", "cidr", "domain", "hash")
EXPIRE_JOB = "eshield.quarantine_expire"
MAX_DURATION_HOURS = 24 * 365 * 10
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def indicator_dict(row: ThreatIndicator) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "value": row.value,
        "source": row.source,
        "confidence": row.confidence,
        "first_seen": row.first_seen.isoformat(),
        "last_seen": row.last_seen.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
    }


def quarantine_dict(row: Quarantine) -> dict[str, Any]:
    return {
        "id": row.id,
        "target": row.target,
        "kind": row.kind,
        "addresses": list(row.addresses or []),
        "reason": row.reason,
        "forced": row.forced,
        "status": row.status,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "released_at": row.released_at.isoformat() if row.released_at else None,
    }


# -- threat feed --------------------------------------------------------------------------------


async def get_threat_feed(
    session: AsyncSession,
    *,
    type: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    """Active (unexpired) indicators, newest first, optionally of one type."""
    if type is not None and type not in INDICATOR_TYPES:
        raise BadRequest(f"type must be one of {', '.join(INDICATOR_TYPES)}", fields=["type"])
    now = utcnow()
    query = select(ThreatIndicator).where(
        (ThreatIndicator.expires_at.is_(None)) | (ThreatIndicator.expires_at > now)
    )
    if type is not None:
        query = query.where(ThreatIndicator.type == type)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar()
    rows = await session.execute(
        query.order_by(ThreatIndicator.last_seen.desc(), ThreatIndicator.id.desc())
        .limit(max(1, min(limit, 500)))
        .offset(max(0, offset))
    )
    return {
        "threats": [indicator_dict(r) for r in rows.scalars()],
        "total": int(total or 0),
        "limit": limit,
        "offset": offset,
    }


async def import_threat_feed(
    session: AsyncSession,
    *,
    content: str,
    source: str,
    format: str = "auto",
    confidence: int = 50,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Parse a whole feed, then upsert its indicators in one transaction (all or nothing)."""
    used, parsed = parse_feed(content, format)
    now = utcnow()
    existing: dict[tuple[str, str], ThreatIndicator] = {}
    keys = [(p.type, p.value) for p in parsed]
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = await session.execute(
            select(ThreatIndicator).where(
                ThreatIndicator.value.in_([v for _, v in chunk]),
                ThreatIndicator.type.in_({t for t, _ in chunk}),
            )
        )
        existing.update({(r.type, r.value): r for r in rows.scalars()})
    created = updated = 0
    for item in parsed:
        row = existing.get((item.type, item.value))
        if row is None:
            session.add(
                ThreatIndicator(
                    type=item.type,
                    value=item.value,
                    source=source,
                    confidence=item.confidence if item.confidence is not None else confidence,
                    first_seen=now,
                    last_seen=now,
                    expires_at=item.expires_at,
                )
            )
            created += 1
        else:
            row.last_seen = now
            row.expires_at = item.expires_at
            row.confidence = max(row.confidence, item.confidence or confidence)
            updated += 1
    await session.commit()
    result = {"format": used, "source": source, "created": created, "updated": updated}
    await ledger.record(
        "threat_feed_imported", actor=actor, target=source, result=result, request_id=request_id
    )
    return result


FEED_IMPORT_JOB = "eshield.feed_import"
MAX_FEED_BYTES = 20_000_000


async def fetch_feed(url: str) -> str:
    """Download a feed through the SSRF guard (public addresses only, unless allow-listed)."""
    from tools.ssrf import check_url, guarded_request

    check_url(url)
    response = await guarded_request(
        "GET", url, timeout=60.0, max_bytes=MAX_FEED_BYTES, max_redirects=3
    )
    if response.status_code != 200:
        raise UpstreamError(f"feed URL answered HTTP {response.status_code}", code="FETCH_FAILED")
    try:
        return response.content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the feed is not UTF-8 text", code="FEED_MALFORMED") from None


async def enqueue_feed_import(
    *,
    url: str,
    source: str | None,
    format: str,
    confidence: int,
    actor: str,
    request_id: str | None = None,
) -> int:
    """Queue a URL import (downloads never block a request); returns the job id."""
    from tools.ssrf import check_url

    check_url(url)  # refuse bad URLs now, with a 400, rather than in the job
    args = {
        "url": url,
        "source": source or url,
        "format": format,
        "confidence": confidence,
        "actor": actor,
        "request_id": request_id,
    }
    return await jobs.enqueue(FEED_IMPORT_JOB, args)


@jobs.job_handler(FEED_IMPORT_JOB)
async def _feed_import_job(
    ctx: jobs.JobContext,
    *,
    url: str,
    source: str,
    format: str,
    confidence: int,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    await ctx.progress(0.1, "downloading")
    content = await fetch_feed(url)
    await ctx.progress(0.5, "importing")
    async with session_scope() as session:
        return await import_threat_feed(
            session,
            content=content,
            source=source,
            format=format,
            confidence=confidence,
            actor=actor,
            request_id=request_id,
        )


# -- quarantine ---------------------------------------------------------------------------------


def _target_kind(target: str) -> tuple[str, list[str]]:
    """(kind, addresses) for an IP, a CIDR or a hostname; BadRequest otherwise."""
    text = target.strip()
    try:
        net = parse_network(text)
    except ValueError:
        net = None
    if net is not None:
        kind = "ip" if net.num_addresses == 1 and "/" not in text else "cidr"
        return kind, [str(net)]
    name = text.lower().rstrip(".")
    if name == "localhost" or HOSTNAME_RE.match(name) or _single_label(name):
        return "hostname", []
    raise BadRequest("target must be an IP address, a CIDR or a hostname", fields=["target"])


def _display(target: str, kind: str, addresses: list[str]) -> str:
    """How a target is stored: a bare address, a CIDR, or a lower-case host name."""
    if kind == "hostname":
        return target.strip().lower().rstrip(".")
    return addresses[0].split("/")[0] if kind == "ip" else addresses[0]


_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")  # ASCII LDH: IDNs come as xn--punycode


def _single_label(name: str) -> bool:
    return bool(_LABEL_RE.match(name))


async def _resolve(name: str) -> list[str]:
    """Addresses of a hostname (best effort: an unresolvable name is stored without any)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(name, None), 5.0)
    except (OSError, TimeoutError):
        return []
    return sorted({str(parse_network(str(info[4][0]))) for info in infos})


def own_networks() -> list[Network]:
    """Addresses ExecFlow itself answers on: loopback, the configured host, this host's names."""
    nets: list[Network] = [parse_network("127.0.0.0/8"), parse_network("::1/128")]
    candidates = {get_settings().host}
    with contextlib.suppress(OSError):
        candidates.update(socket.gethostbyname_ex(socket.gethostname())[2])
    for value in candidates:
        try:
            net = parse_network(value)
        except ValueError:
            continue
        if not net.network_address.is_unspecified:
            nets.append(net)
    return nets


async def _protected_reason(session: AsyncSession, addresses: Sequence[str]) -> str | None:
    nets = [parse_network(a) for a in addresses]
    for net in nets:
        if net.network_address.is_loopback or net.network_address.is_unspecified:
            return "it is a loopback or unspecified address"
    for own in own_networks():
        if any(_overlaps(net, own) for net in nets):
            return f"it covers ExecFlow's own address {own}"
    for site in (await session.execute(select(Site))).scalars():
        for entry in site.allowlist or []:
            allowed = parse_network(entry)
            if any(_overlaps(net, allowed) for net in nets):
                return f"it overlaps the allow-list of site {site.id} ({allowed})"
    return None


def _overlaps(a: Network, b: Network) -> bool:
    return a.version == b.version and a.overlaps(b)  # type: ignore[arg-type]


async def quarantine_target(
    session: AsyncSession,
    *,
    target: str,
    reason: str | None = None,
    duration_hours: float | None = None,
    force: bool = False,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Block all traffic from ``target`` in every proxy now; auto-release after the duration."""
    if duration_hours is not None and not 0 < duration_hours <= MAX_DURATION_HOURS:
        raise BadRequest(
            f"duration_hours must be > 0 and <= {MAX_DURATION_HOURS} (or null: until released)",
            fields=["duration_hours"],
        )
    kind, addresses = _target_kind(target)
    if kind == "hostname":
        if target.strip().lower().rstrip(".") == "localhost":
            addresses = ["127.0.0.1/32", "::1/128"]
        else:
            addresses = await _resolve(target.strip())
    normalised = _display(target, kind, addresses)
    if addresses and not force:
        why = await _protected_reason(session, addresses)
        if why is not None:
            raise BadRequest(
                f"refusing to quarantine {target}: {why} (an admin key may send force: true)",
                fields=["target"],
                code="QUARANTINE_PROTECTED",
            )
    active = (
        await session.execute(
            select(Quarantine).where(Quarantine.status == "active", Quarantine.target == normalised)
        )
    ).scalar()
    if active is not None and (active.expires_at is None or active.expires_at > utcnow()):
        raise Conflict(
            f"{normalised} is already quarantined (id {active.id})", code="ALREADY_QUARANTINED"
        )
    now = utcnow()
    row = Quarantine(
        target=normalised,
        kind=kind,
        addresses=addresses,
        reason=reason,
        forced=force,
        created_by=actor,
        created_at=now,
        expires_at=now + dt.timedelta(hours=duration_hours) if duration_hours else None,
    )
    session.add(row)
    await session.commit()
    await publish_rules_changed()  # proxies first; the ledger entry follows
    await ledger.record(
        "quarantine",
        actor=actor,
        target=normalised,
        params={"reason": reason, "duration_hours": duration_hours, "force": force},
        result={"quarantine_id": row.id, "addresses": addresses},
        request_id=request_id,
    )
    if row.expires_at is not None:
        await jobs.enqueue(
            EXPIRE_JOB,
            {"quarantine_id": row.id},
            delay_seconds=duration_hours * 3600 if duration_hours else 0,
            idempotency_key=f"quarantine-expire-{row.id}",
        )
    return quarantine_dict(row)


async def release_quarantine(
    session: AsyncSession,
    *,
    target: str | None = None,
    quarantine_id: int | None = None,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Lift an active quarantine (by id or target); proxies stop enforcing it within a second."""
    if quarantine_id is None and not target:
        raise BadRequest("give a target or a quarantine_id", fields=["target", "quarantine_id"])
    query = select(Quarantine).where(Quarantine.status == "active")
    if quarantine_id is not None:
        query = query.where(Quarantine.id == quarantine_id)
    else:
        assert target is not None
        kind, addresses = _target_kind(target)
        wanted = _display(target, kind, addresses)
        query = query.where(Quarantine.target == wanted)
    row = (await session.execute(query)).scalar()
    closed = None
    if row is not None:
        closed = await _close(session, row, status="released", actor=actor, request_id=request_id)
    if closed is None:
        raise NotFound(f"No active quarantine for {quarantine_id or target}")
    return closed


async def _close(
    session: AsyncSession, row: Quarantine, *, status: str, actor: str, request_id: str | None
) -> dict[str, Any] | None:
    """Close an active quarantine once: a racing releaser (another replica) gets None."""
    now = utcnow()
    claimed = await session.execute(
        update(Quarantine)
        .where(Quarantine.id == row.id, Quarantine.status == "active")
        .values(status=status, released_at=now, released_by=actor)
    )
    await session.commit()
    if getattr(claimed, "rowcount", 1) != 1:
        return None
    await session.refresh(row)
    await publish_rules_changed()  # proxies first; the ledger entry follows
    await ledger.record(
        "quarantine_released",
        actor=actor,
        target=row.target,
        params={
            "quarantine_id": row.id,
            "reason": "expired" if status == "expired" else row.reason,
        },
        result={"status": status},
        request_id=request_id,
    )
    return quarantine_dict(row)


async def list_quarantines(
    session: AsyncSession, *, status: str = "active", limit: int = 50, offset: int = 0
) -> dict[str, Any]:
    """Quarantines (active ones by default: unexpired and not released), newest first."""
    query = select(Quarantine)
    if status == "active":
        now = utcnow()
        query = query.where(
            Quarantine.status == "active",
            (Quarantine.expires_at.is_(None)) | (Quarantine.expires_at > now),
        )
    elif status != "all":
        query = query.where(Quarantine.status == status)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar()
    rows = await session.execute(query.order_by(Quarantine.id.desc()).limit(limit).offset(offset))
    return {"quarantines": [quarantine_dict(r) for r in rows.scalars()], "total": int(total or 0)}


async def expire_quarantines(session: AsyncSession, *, now: dt.datetime | None = None) -> int:
    """Mark every lapsed active quarantine expired (ledger entry each); returns how many."""
    moment = now or utcnow()
    rows = list(
        (
            await session.execute(
                select(Quarantine).where(
                    Quarantine.status == "active",
                    Quarantine.expires_at.is_not(None),
                    Quarantine.expires_at <= moment,
                )
            )
        ).scalars()
    )
    closed = 0
    for row in rows:
        done = await _close(
            session, row, status="expired", actor="system:scheduler", request_id=None
        )
        closed += done is not None
    return closed


@jobs.job_handler(EXPIRE_JOB)
async def _expire_job(ctx: jobs.JobContext, quarantine_id: int) -> dict[str, Any]:
    async with session_scope() as session:
        row = await session.get(Quarantine, quarantine_id)
        if row is None or row.status != "active" or row.expires_at is None:
            return {"expired": 0}
        remaining = (row.expires_at - utcnow()).total_seconds()
        if remaining > 0:  # woke early (clock skew): come back when it is due
            await jobs.enqueue(
                EXPIRE_JOB, {"quarantine_id": quarantine_id}, delay_seconds=remaining
            )
            return {"expired": 0, "rescheduled_in": remaining}
        count = await expire_quarantines(session)
    return {"expired": count}
