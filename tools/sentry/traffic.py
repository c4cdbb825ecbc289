"""The seam to the traffic module (tools.vaultshield), which may not be installed yet.

It is imported when used, never at import time, so Sentry V works (with zero traffic signals
and no proxy notification) before the traffic module is merged.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

_ZEROS = {"requests": 0, "blocked": 0, "eshield_hits": 0}


async def _call_vaultshield(name: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """(found, result) of ``tools.vaultshield.<name>(...)``, awaited if it is a coroutine."""
    try:
        module = importlib.import_module("tools.vaultshield")
    except ImportError:
        return False, None
    function = getattr(module, name, None)
    if function is None:
        return False, None
    result = function(*args, **kwargs)
    return True, (await result if inspect.isawaitable(result) else result)


async def traffic_signals(
    session: AsyncSession, *, site_id: int, since: dt.datetime
) -> dict[str, int]:
    """VaultShield/eShield counters of one site since ``since``; zeros without the module.

    Expects ``tools.vaultshield.site_traffic_stats(session, *, site_id, since)`` returning
    ``{"requests", "blocked", "eshield_hits"}``.
    """
    _, stats = await _call_vaultshield("site_traffic_stats", session, site_id=site_id, since=since)
    return {k: int((stats or {}).get(k) or 0) for k in _ZEROS}


async def publish_rules_changed() -> bool:
    """Tell running proxies to reload rules and shield mode; False without the module."""
    found, _ = await _call_vaultshield("publish_rules_changed")
    return found
