"""Webhook endpoints: create (secret shown once), list, update, delete, rotate, ping, redeliver.

Service functions take the request's session first and keyword-only arguments after; they
commit their own change before appending to the ledger, and never put a secret in the ledger,
a log line or any return value other than the one that issues it.
"""

from __future__ import annotations

import datetime as dt
import secrets as random_tokens
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import ledger
from models.crypto import encrypt_secret
from models.db import utcnow
from models.errors import BadRequest, Conflict, NotFound
from models.settings import get_settings
from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tools.ssrf import check_url
from tools.webhooks.delivery import attempt_delivery
from tools.webhooks.events import PING, WILDCARD, is_known
from tools.webhooks.payload import encode_body
from tools.webhooks.signing import generate_secret

MAX_EVENTS = 100
DELIVERY_STATUSES = ("pending", "delivered", "failed")


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def webhook_dict(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as the API shows it: never its secret."""
    now = utcnow()
    expires = endpoint.previous_secret_expires_at
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "disabled_at": _iso(endpoint.disabled_at),
        "failing_since": _iso(endpoint.failing_since),
        "last_success_at": _iso(endpoint.last_success_at),
        "last_failure_at": _iso(endpoint.last_failure_at),
        "previous_secret_valid_until": _iso(expires) if expires and expires > now else None,
        "created_at": _iso(endpoint.created_at),
        "updated_at": _iso(endpoint.updated_at),
    }


def validate_events(events: Sequence[str]) -> list[str]:
    if not events:
        raise BadRequest("events must name at least one event type (or '*')", fields=["events"])
    if len(events) > MAX_EVENTS:
        raise BadRequest(f"at most {MAX_EVENTS} event types", fields=["events"])
    unknown = [e for e in events if not is_known(e) or e == PING]
    if unknown:
        raise BadRequest(
            f"unknown event type(s): {', '.join(sorted(set(unknown)))}; "
            "see GET /api/webhooks/events",
            fields=[{"field": "events", "unknown": sorted(set(unknown))}],
        )
    return [WILDCARD] if WILDCARD in events else list(dict.fromkeys(events))


async def _get(session: AsyncSession, webhook_id: int) -> WebhookEndpoint:
    endpoint = await session.get(WebhookEndpoint, webhook_id)
    if endpoint is None:
        raise NotFound(f"Webhook {webhook_id} not found", code="WEBHOOK_NOT_FOUND")
    return endpoint


async def _ledger_head(session: AsyncSession) -> int:
    head = (await session.execute(select(func.max(ledger.AuditEntry.seq)))).scalar()
    return -1 if head is None else int(head)


async def create_webhook(
    session: AsyncSession,
    *,
    url: str,
    events: Sequence[str],
    description: str | None = None,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Register an endpoint; the returned ``secret`` is never retrievable again."""
    check_url(url)
    chosen = validate_events(events)
    secret = generate_secret()
    endpoint = WebhookEndpoint(
        url=url,
        events=chosen,
        description=description,
        secret_encrypted=encrypt_secret(secret),
        start_seq=await _ledger_head(session),
        enabled=True,
        created_by=actor,
    )
    session.add(endpoint)
    await session.commit()
    await ledger.record(
        "webhook_created",
        actor=actor,
        target=f"webhook:{endpoint.id}",
        params={"url": url, "events": chosen, "description": description},
        result={"webhook_id": endpoint.id},
        request_id=request_id,
    )
    return {"webhook": webhook_dict(endpoint), "secret": secret}


async def list_webhooks(session: AsyncSession) -> list[dict[str, Any]]:
    """Every endpoint with its subscriptions and health; no secrets."""
    rows = await session.execute(select(WebhookEndpoint).order_by(WebhookEndpoint.id))
    return [webhook_dict(e) for e in rows.scalars()]


async def get_webhook(session: AsyncSession, *, webhook_id: int) -> dict[str, Any]:
    return webhook_dict(await _get(session, webhook_id))


async def update_webhook(
    session: AsyncSession,
    *,
    webhook_id: int,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Change an endpoint; ``enabled=True`` re-enables a disabled one and clears its reason."""
    endpoint = await _get(session, webhook_id)
    changed: dict[str, Any] = {}
    if url is not None:
        check_url(url)
        endpoint.url = changed["url"] = url
    if events is not None:
        endpoint.events = changed["events"] = validate_events(events)
    if description is not None:
        endpoint.description = changed["description"] = description
    if enabled is not None:
        changed["enabled"] = enabled
        endpoint.enabled = enabled
        if enabled:
            endpoint.disabled_reason = endpoint.disabled_at = endpoint.failing_since = None
        else:
            endpoint.disabled_reason, endpoint.disabled_at = f"disabled by {actor}", utcnow()
    await session.commit()
    if changed:
        await ledger.record(
            "webhook_updated",
            actor=actor,
            target=f"webhook:{webhook_id}",
            params={"webhook_id": webhook_id, **changed},
            request_id=request_id,
        )
    return webhook_dict(endpoint)


async def delete_webhook(
    session: AsyncSession, *, webhook_id: int, actor: str, request_id: str | None = None
) -> dict[str, Any]:
    """Delete an endpoint with its delivery log."""
    endpoint = await _get(session, webhook_id)
    shown = webhook_dict(endpoint)
    await session.delete(endpoint)
    await session.commit()
    await ledger.record(
        "webhook_deleted",
        actor=actor,
        target=f"webhook:{webhook_id}",
        params={"webhook_id": webhook_id, "url": shown["url"]},
        request_id=request_id,
    )
    return shown


async def rotate_secret(
    session: AsyncSession,
    *,
    webhook_id: int,
    grace_hours: float | None = None,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Issue a new secret (returned once); the old one keeps signing for the grace period."""
    endpoint = await _get(session, webhook_id)
    grace = get_settings().webhook_secret_grace_hours if grace_hours is None else grace_hours
    if grace < 0 or grace > 24 * 30:
        raise BadRequest("grace_hours must be between 0 and 720", fields=["grace_hours"])
    secret = generate_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = utcnow() + dt.timedelta(hours=grace)
    endpoint.secret_encrypted = encrypt_secret(secret)
    await session.commit()
    await ledger.record(
        "webhook_secret_rotated",
        actor=actor,
        target=f"webhook:{webhook_id}",
        params={"webhook_id": webhook_id, "grace_hours": grace},
        request_id=request_id,
    )
    return {"webhook": webhook_dict(endpoint), "secret": secret}


def delivery_dict(
    delivery: WebhookDelivery, attempts: Sequence[WebhookAttempt] = ()
) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "webhook_id": delivery.endpoint_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": _iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": _iso(delivery.created_at),
        "delivered_at": _iso(delivery.delivered_at),
        "attempt_log": [
            {
                "attempt": a.attempt,
                "started_at": _iso(a.started_at),
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "error": a.error,
                "outcome": a.outcome,
            }
            for a in attempts
        ],
    }


async def list_deliveries(
    session: AsyncSession,
    *,
    webhook_id: int,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """An endpoint's delivery log, newest first, each with its attempts."""
    await _get(session, webhook_id)
    if status is not None and status not in DELIVERY_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}", fields=["status"])
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == webhook_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
        .offset(offset)
    )
    if status:
        query = query.where(WebhookDelivery.status == status)
    deliveries = list((await session.execute(query)).scalars())
    by_delivery: dict[int, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
    if deliveries:
        rows = await session.execute(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(by_delivery)))
            .order_by(WebhookAttempt.attempt)
        )
        for attempt in rows.scalars():
            by_delivery[attempt.delivery_id].append(attempt)
    return [delivery_dict(d, by_delivery[d.id]) for d in deliveries]


async def redeliver(
    session: AsyncSession,
    *,
    webhook_id: int,
    delivery_id: int,
    actor: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Queue a delivery again now (same event id, same body, fresh signature)."""
    await _get(session, webhook_id)
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != webhook_id:
        raise NotFound(f"Delivery {delivery_id} not found", code="DELIVERY_NOT_FOUND")
    if delivery.status == "pending" and delivery.leased_until and delivery.leased_until > utcnow():
        raise Conflict("this delivery is being attempted right now", code="DELIVERY_IN_FLIGHT")
    delivery.status, delivery.next_attempt_at = "pending", utcnow()
    delivery.leased_until = delivery.lease_owner = None
    await session.commit()
    await ledger.record(
        "webhook_redelivered",
        actor=actor,
        target=f"webhook:{webhook_id}",
        params={
            "webhook_id": webhook_id,
            "delivery_id": delivery_id,
            "event_id": delivery.event_id,
        },
        request_id=request_id,
    )
    return delivery_dict(delivery)


async def ping_webhook(session: AsyncSession, *, webhook_id: int, actor: str) -> dict[str, Any]:
    """Send a signed ``ping`` event now; return status code, latency and error (no retries)."""
    endpoint = await _get(session, webhook_id)
    event_id = f"evt_ping_{random_tokens.token_hex(8)}"
    event = {
        "id": event_id,
        "type": PING,
        "timestamp": _iso(utcnow()),
        "data": {"webhook_id": webhook_id, "requested_by": actor, "message": "ExecFlow ping"},
    }
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_id=event_id,
        event_type=PING,
        body=encode_body(event).decode(),
        leased_until=utcnow() + dt.timedelta(minutes=5),  # ours: no dispatcher takes it
        lease_owner="ping",
    )
    session.add(delivery)
    await session.commit()
    outcome = await attempt_delivery(delivery.id, retry=False, affects_endpoint=False)
    assert outcome is not None
    return {
        "event_id": event_id,
        "delivery_id": delivery.id,
        "delivered": outcome.delivered,
        "status_code": outcome.status_code,
        "latency_ms": outcome.latency_ms,
        "error": outcome.error,
    }
