"""VaultShield rules: storage, the change signal every proxy follows, and protection status."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models.db import get_database, utcnow
from models.errors import BadRequest, NotFound
from models.settings import get_settings
from models.sites import Site
from models.traffic import Quarantine, VaultShieldRule, VaultShieldState
from tools.vaultshield.engine import validate_rule
from tools.vaultshield.stats import traffic_summary

log = logging.getLogger(__name__)


def channel(prefix: str) -> str:
    return f"{prefix}:vaultshield:changed"


def rule_dict(rule: VaultShieldRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "site_id": rule.site_id,
        "type": rule.type,
        "value": rule.value,
        "action": rule.action,
        "priority": rule.priority,
        "created_by": rule.created_by,
        "created_at": rule.created_at.isoformat(),
    }


async def add_vaultshield_rule(
    session: AsyncSession,
    *,
    type: str,
    value: str,
    action: str = "block",
    priority: int = 100,
    site_id: int | None = None,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Add a rule (global when ``site_id`` is None); running proxies apply it within a second."""
    try:
        normalised = validate_rule(type, value, action)
    except ValueError as exc:
        raise BadRequest(str(exc), fields=["value" if "value" in str(exc) else "type"]) from None
    if not 1 <= int(priority) <= 1_000_000:
        raise BadRequest("priority must be between 1 and 1000000", fields=["priority"])
    if site_id is not None and await session.get(Site, site_id) is None:
        raise NotFound(f"Site {site_id} not found")
    rule = VaultShieldRule(
        site_id=site_id,
        type=type,
        value=normalised,
        action=action,
        priority=int(priority),
        created_by=actor,
    )
    session.add(rule)
    await session.commit()
    await publish_rules_changed()  # proxies first; the ledger entry follows
    await ledger.record(
        "vaultshield_rule_added",
        actor=actor,
        target=f"rule:{rule.id}",
        params={
            "type": type,
            "value": normalised,
            "action": action,
            "priority": priority,
            "site_id": site_id,
        },
        request_id=request_id,
    )
    return rule_dict(rule)


async def list_vaultshield_rules(
    session: AsyncSession,
    *,
    site_id: int | None = None,
    type: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> dict[str, Any]:
    """Rules in evaluation order (priority, then id), optionally for one site or type."""
    query = select(VaultShieldRule)
    if site_id is not None:
        query = query.where(VaultShieldRule.site_id == site_id)
    if type is not None:
        query = query.where(VaultShieldRule.type == type)
    total = (await session.execute(select(func.count()).select_from(query.subquery()))).scalar()
    rows = await session.execute(
        query.order_by(VaultShieldRule.priority, VaultShieldRule.id).limit(limit).offset(offset)
    )
    return {"rules": [rule_dict(r) for r in rows.scalars()], "total": int(total or 0)}


async def delete_vaultshield_rule(
    session: AsyncSession, *, rule_id: int, actor: str, request_id: str | None = None
) -> dict[str, Any]:
    """Remove a rule; running proxies drop it within a second."""
    rule = await session.get(VaultShieldRule, rule_id)
    if rule is None:
        raise NotFound(f"Rule {rule_id} not found")
    removed = rule_dict(rule)
    await session.delete(rule)
    await session.commit()
    await publish_rules_changed()  # proxies first; the ledger entry follows
    await ledger.record(
        "vaultshield_rule_deleted",
        actor=actor,
        target=f"rule:{rule_id}",
        params={k: removed[k] for k in ("type", "value", "action", "priority", "site_id")},
        request_id=request_id,
    )
    return removed


async def rules_version(session: AsyncSession) -> int:
    row = await session.get(VaultShieldState, "rules", populate_existing=True)
    return row.version if row is not None else 0


async def publish_rules_changed() -> None:
    """Tell every running proxy to reload rules, quarantines and shield mode (within a second).

    Bumps the version proxies poll (its own transaction) and, with Redis configured, publishes
    on the change channel. Proxies reload again shortly after a signal, so a caller that
    commits its own change just after calling this is still picked up.
    """
    async with get_database().session() as session:
        result = await session.execute(
            update(VaultShieldState)
            .where(VaultShieldState.key == "rules")
            .values(version=VaultShieldState.version + 1, updated_at=utcnow())
        )
        if getattr(result, "rowcount", 1) == 0:
            session.add(VaultShieldState(key="rules", version=1))
    settings = get_settings()
    if settings.redis_url:
        import redis.asyncio as aioredis

        client = aioredis.from_url(settings.redis_url)
        try:
            await client.publish(channel(settings.redis_prefix), "changed")
        except Exception:  # the version bump alone still reaches every proxy by polling
            log.warning("publishing the VaultShield change signal failed", exc_info=True)
        finally:
            await client.aclose()  # type: ignore[attr-defined]


async def get_vaultshield_status(session: AsyncSession) -> dict[str, Any]:
    """Protection per site (normal/shield), active rule counts, traffic for the last hour/day."""
    now = utcnow()
    sites = list((await session.execute(select(Site).order_by(Site.id))).scalars())
    counts = dict(
        (
            await session.execute(
                select(VaultShieldRule.site_id, func.count()).group_by(VaultShieldRule.site_id)
            )
        ).all()
    )
    quarantines = (
        await session.execute(
            select(func.count())
            .select_from(Quarantine)
            .where(Quarantine.status == "active")
            .where((Quarantine.expires_at.is_(None)) | (Quarantine.expires_at > now))
        )
    ).scalar() or 0
    global_rules = int(counts.get(None, 0))
    traffic = await traffic_summary(session, now=now)
    per_site = []
    for site in sites:
        per_site.append(
            {
                "site_id": site.id,
                "name": site.name,
                "protection": "shield" if site.shield_mode else "normal",
                "active_rules": global_rules + int(counts.get(site.id, 0)),
                "traffic": traffic["sites"].get(site.id, traffic["empty"]),
            }
        )
    return {
        "status": "shield" if any(s.shield_mode for s in sites) else "normal",
        "active_rules": sum(int(v) for v in counts.values()),
        "global_rules": global_rules,
        "active_quarantines": int(quarantines),
        "rules_version": await rules_version(session),
        "sites": per_site,
        "traffic": traffic["total"],
        "generated_at": now.isoformat(),
    }
