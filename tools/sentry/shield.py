"""Shield mode: the maximum defensive posture of a site's VaultShield proxy."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models.db import utcnow
from models.errors import NotFound
from models.sites import Site
from tools.sentry.incidents import add_event, open_incident_for
from tools.sentry.traffic import publish_rules_changed


async def set_shield_mode(
    session: AsyncSession,
    *,
    site_id: int,
    enabled: bool,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Turn shield mode on or off, note it on the open incident, audit it, tell the proxies."""
    site = await session.get(Site, site_id)
    if site is None:
        raise NotFound(f"Site {site_id} not found", code="SITE_NOT_FOUND")
    previous = bool(site.shield_mode)
    site.shield_mode = bool(enabled)
    incident = await open_incident_for(session, site_id)
    if incident is not None:
        add_event(
            session,
            incident,
            "shield_mode_changed",
            at=utcnow(),
            actor=actor,
            message=f"Shield mode {'enabled' if enabled else 'disabled'}",
            data={"enabled": bool(enabled), "previous": previous, "request_id": request_id},
        )
    await session.commit()
    incident_id = incident.id if incident is not None else None
    await ledger.record(
        "shield_mode_changed",
        actor=actor,
        target=f"site:{site_id}",
        params={"site_id": site_id, "enabled": bool(enabled)},
        result={"previous": previous, "incident_id": incident_id},
        request_id=request_id,
    )
    propagated = await publish_rules_changed()
    return {
        "site_id": site_id,
        "shield_mode": bool(enabled),
        "previous": previous,
        "changed": previous != bool(enabled),
        "incident_id": incident_id,
        "propagated": propagated,
    }
