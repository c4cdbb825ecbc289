"""Agent actions on an incident's timeline."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models.db import utcnow
from models.errors import NotFound
from models.sites import Site
from tools.sentry.incidents import add_event, open_incident_for


async def note_incident_action(
    session: AsyncSession,
    *,
    site_id: int,
    message: str,
    actor: str,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Append an agent action to the site's open incident; ``incident_id`` None if none open."""
    if await session.get(Site, site_id) is None:
        raise NotFound(f"Site {site_id} not found", code="SITE_NOT_FOUND")
    incident = await open_incident_for(session, site_id)
    if incident is None:
        return {"site_id": site_id, "incident_id": None}
    add_event(
        session,
        incident,
        "agent_action",
        at=utcnow(),
        actor=actor,
        message=message,
        data=data or {},
    )
    return {"site_id": site_id, "incident_id": incident.id}
