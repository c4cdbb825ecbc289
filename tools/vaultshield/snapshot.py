"""Load what a proxy enforces for one site from the database into a compiled ``Engine``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.db import utcnow
from models.errors import NotFound
from models.sites import Site
from models.traffic import Quarantine, VaultShieldRule
from tools.vaultshield.engine import QUARANTINE_PRIORITY, Rule


@dataclass
class Snapshot:
    site_id: int
    upstream_url: str | None
    allowlist: list[str]
    shield_mode: bool
    rules: list[Rule]
    next_expiry: dt.datetime | None  # when the earliest active quarantine lapses


async def load_snapshot(session: AsyncSession, site_id: int) -> Snapshot:
    """The site's rules, the global ones, and each active quarantine as a top-priority block."""
    site = await session.get(Site, site_id, populate_existing=True)
    if site is None:
        raise NotFound(f"Site {site_id} not found")
    rows = await session.execute(
        select(VaultShieldRule).where(
            or_(VaultShieldRule.site_id.is_(None), VaultShieldRule.site_id == site_id)
        )
    )
    rules = [
        Rule(id=r.id, type=r.type, value=r.value, action=r.action, priority=r.priority)
        for r in rows.scalars()
    ]
    now = utcnow()
    quarantines = (
        await session.execute(select(Quarantine).where(Quarantine.status == "active"))
    ).scalars()
    next_expiry: dt.datetime | None = None
    for q in quarantines:
        if q.expires_at is not None:
            if q.expires_at <= now:
                continue
            next_expiry = q.expires_at if next_expiry is None else min(next_expiry, q.expires_at)
        for address in q.addresses or []:
            rules.append(
                Rule(
                    id=q.id,
                    type="ip_block",
                    value=address,
                    action="block",
                    priority=QUARANTINE_PRIORITY,
                    source="quarantine",
                    forced=q.forced,
                )
            )
    return Snapshot(
        site_id=site.id,
        upstream_url=site.upstream_url,
        allowlist=list(site.allowlist or []),
        shield_mode=bool(site.shield_mode),
        rules=rules,
        next_expiry=next_expiry,
    )
