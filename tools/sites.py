"""Sites: what Sentry V monitors and a VaultShield proxy protects (CRUD over ``models.sites``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models.errors import BadRequest, Conflict, NotFound
from models.sites import Site, list_sites
from models.traffic import VaultShieldRule
from tools.ssrf import check_monitor_url
from tools.vaultshield.engine import parse_network
from tools.vaultshield.service import publish_rules_changed

_EDITABLE = ("name", "url", "upstream_url", "allowlist", "metadata")


def site_dict(site: Site) -> dict[str, Any]:
    return {
        "id": site.id,
        "name": site.name,
        "url": site.url,
        "upstream_url": site.upstream_url,
        "allowlist": list(site.allowlist or []),
        "shield_mode": bool(site.shield_mode),
        "metadata": dict(site.meta or {}),
        "created_at": site.created_at.isoformat(),
        "updated_at": site.updated_at.isoformat(),
    }


def _check_url(value: str | None, field: str) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{field} must be an http(s) URL with a host", fields=[field])
    try:
        check_monitor_url(value)  # Sentry probes it and the proxy forwards to it
    except BadRequest as exc:
        raise BadRequest(f"{field}: {exc.message}", code=exc.code, fields=[field]) from None


def _normalise_allowlist(entries: list[str]) -> list[str]:
    out = []
    for entry in entries:
        try:
            out.append(str(parse_network(entry)))
        except ValueError:
            raise BadRequest(
                f"allowlist entry {entry!r} is not an IP address or CIDR", fields=["allowlist"]
            ) from None
    return out


async def _get(session: AsyncSession, site_id: int) -> Site:
    site = await session.get(Site, site_id)
    if site is None:
        raise NotFound(f"Site {site_id} not found")
    return site


async def list_all_sites(session: AsyncSession) -> list[dict[str, Any]]:
    """Every site, by id."""
    return [site_dict(s) for s in await list_sites(session)]


async def get_site(session: AsyncSession, *, site_id: int) -> dict[str, Any]:
    """One site."""
    return site_dict(await _get(session, site_id))


async def create_site(
    session: AsyncSession, *, fields: dict[str, Any], actor: str, request_id: str | None = None
) -> dict[str, Any]:
    """Create a site; names are unique."""
    _check_url(fields.get("url"), "url")
    _check_url(fields.get("upstream_url"), "upstream_url")
    site = Site(
        name=fields["name"],
        url=fields["url"],
        upstream_url=fields.get("upstream_url"),
        allowlist=_normalise_allowlist(list(fields.get("allowlist") or [])),
        shield_mode=False,
        meta=dict(fields.get("metadata") or {}),
    )
    session.add(site)
    await _commit_unique(session, fields["name"])
    await ledger.record(
        "site_created",
        actor=actor,
        target=f"site:{site.id}",
        params={k: v for k, v in site_dict(site).items() if k in _EDITABLE},
        request_id=request_id,
    )
    return site_dict(site)


async def update_site(
    session: AsyncSession,
    *,
    site_id: int,
    fields: dict[str, Any],
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Change a site's name, URLs, allow-list or metadata; proxies pick up allow-list changes."""
    site = await _get(session, site_id)
    _check_url(fields.get("url"), "url")
    _check_url(fields.get("upstream_url"), "upstream_url")
    if "allowlist" in fields:
        site.allowlist = _normalise_allowlist(list(fields["allowlist"] or []))
    for key in ("name", "url", "upstream_url"):
        if key in fields:
            if fields[key] is None and key != "upstream_url":
                raise BadRequest(f"{key} cannot be null", fields=[key])
            setattr(site, key, fields[key])
    if "metadata" in fields:
        site.meta = dict(fields["metadata"] or {})
    await _commit_unique(session, site.name)
    await ledger.record(
        "site_updated",
        actor=actor,
        target=f"site:{site_id}",
        params={k: v for k, v in fields.items() if k in _EDITABLE},
        request_id=request_id,
    )
    await publish_rules_changed()
    return site_dict(site)


async def delete_site(
    session: AsyncSession, *, site_id: int, actor: str, request_id: str | None = None
) -> dict[str, Any]:
    """Delete a site and its site-specific rules."""
    site = await _get(session, site_id)
    removed = site_dict(site)
    await session.execute(delete(VaultShieldRule).where(VaultShieldRule.site_id == site_id))
    await session.delete(site)
    await session.commit()
    await publish_rules_changed()  # proxies first; the ledger entry follows
    await ledger.record(
        "site_deleted",
        actor=actor,
        target=f"site:{site_id}",
        params={"name": removed["name"]},
        request_id=request_id,
    )
    return removed


async def _commit_unique(session: AsyncSession, name: str) -> None:
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"A site named {name!r} already exists", code="SITE_EXISTS") from None
