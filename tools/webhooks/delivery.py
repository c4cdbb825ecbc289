"""One delivery attempt: sign, POST through the SSRF guard, record the outcome, schedule a retry.

The attempt's outcome is stored in one transaction (attempt row, delivery state, endpoint
health). Nothing is marked delivered before the receiver answered 2xx, so a worker that dies
mid-attempt leaves the delivery pending; its lease expires and another attempt follows with the
same ``webhook-id`` (at-least-once; receivers deduplicate by id).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import update

from models import ledger
from models.crypto import decrypt_secret
from models.db import get_database, utcnow
from models.errors import ExecFlowError
from models.settings import get_settings
from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tools.ssrf import guarded_request
from tools.webhooks.schedule import RetrySchedule, parse_retry_after
from tools.webhooks.signing import signature_headers

log = logging.getLogger("execflow.webhooks")
MAX_RESPONSE_BYTES = 1_000_000
MAX_ERROR_CHARS = 500


@dataclass
class AttemptOutcome:
    delivery_id: int
    event_id: str
    attempt: int
    delivered: bool
    status_code: int | None
    latency_ms: float | None
    error: str | None
    next_attempt_at: dt.datetime | None = None
    endpoint_disabled: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.next_attempt_at is not None:
            data["next_attempt_at"] = self.next_attempt_at.isoformat().replace("+00:00", "Z")
        return data


def current_schedule() -> RetrySchedule:
    settings = get_settings()
    return RetrySchedule(settings.webhook_retry_schedule, settings.webhook_retry_jitter)


def secrets_in_force(endpoint: WebhookEndpoint, now: dt.datetime) -> list[str]:
    """The current secret, then the previous one while its grace period lasts."""
    found = [decrypt_secret(endpoint.secret_encrypted)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > now:
        found.append(decrypt_secret(endpoint.previous_secret_encrypted))
    return found


async def _post(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> tuple[Any, str | None]:
    """(response or None, error text or None)."""
    body = delivery.body.encode("utf-8", errors="surrogatepass")
    now = utcnow()
    headers = signature_headers(
        secrets_in_force(endpoint, now), delivery.event_id, int(now.timestamp()), body
    )
    headers["User-Agent"] = "ExecFlow-Webhooks/1.0"
    try:
        response = await guarded_request(
            "POST",
            endpoint.url,
            content=body,
            headers=headers,
            timeout=get_settings().webhook_timeout_seconds,
            max_bytes=MAX_RESPONSE_BYTES,
            max_redirects=0,
        )
    except ExecFlowError as exc:  # FETCH_FAILED, SSRF_BLOCKED (DNS changed), oversized reply
        return None, f"{exc.code}: {exc.message}"[:MAX_ERROR_CHARS]
    return response, None


async def attempt_delivery(
    delivery_id: int,
    *,
    schedule: RetrySchedule | None = None,
    retry: bool = True,
    affects_endpoint: bool = True,
) -> AttemptOutcome | None:
    """Send one attempt of a (claimed) delivery and store what happened."""
    db = get_database()
    async with db.session() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        endpoint = (
            None if delivery is None else await session.get(WebhookEndpoint, delivery.endpoint_id)
        )
    if delivery is None or endpoint is None or delivery.status != "pending":
        return None
    started = utcnow()
    response, error = await _post(endpoint, delivery)
    status_code = None if response is None else response.status_code
    latency = None if response is None else round(response.elapsed_ms, 2)
    delivered = status_code is not None and 200 <= status_code < 300
    gone = status_code == 410
    if response is not None and not delivered:
        error = _describe_status(status_code, response.content)
    attempt_no = delivery.attempts + 1
    outcome = AttemptOutcome(
        delivery.id, delivery.event_id, attempt_no, delivered, status_code, latency, error
    )
    retry_after = None
    if response is not None:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=utcnow())
    delay = None
    if not delivered and not gone and retry:
        delay = (schedule or current_schedule()).delay_after(attempt_no, retry_after=retry_after)
    if delay is not None:
        outcome.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)
    disabled_reason = await _store_outcome(
        endpoint.id, delivery.id, started, outcome, gone=gone, affects_endpoint=affects_endpoint
    )
    if disabled_reason:
        outcome.endpoint_disabled = True
        await ledger.record(
            "webhook_disabled",
            actor="system:webhooks",
            target=f"webhook:{endpoint.id}",
            params={"webhook_id": endpoint.id},
            result={"reason": disabled_reason},
        )
    log.info(
        "webhook attempt",
        extra={
            "webhook_id": endpoint.id,
            "delivery_id": delivery.id,
            "event_id": delivery.event_id,
            "attempt": attempt_no,
            "status_code": status_code,
            "delivered": delivered,
            "latency_ms": latency,
            "error": error,
        },
    )
    return outcome


def _describe_status(status_code: int | None, content: bytes) -> str:
    snippet = content[:200].decode("utf-8", errors="replace").strip()
    text = f"receiver answered HTTP {status_code}"
    if status_code is not None and 300 <= status_code < 400:
        text += " (redirects are not followed)"
    return f"{text}: {snippet}"[:MAX_ERROR_CHARS] if snippet else text


async def _store_outcome(
    endpoint_id: int,
    delivery_id: int,
    started: dt.datetime,
    outcome: AttemptOutcome,
    *,
    gone: bool,
    affects_endpoint: bool,
) -> str | None:
    """Persist the attempt; return the reason if the endpoint got disabled by it."""
    now = utcnow()
    if outcome.delivered:
        status = "delivered"
    elif outcome.next_attempt_at is not None:
        status = "pending"
    else:
        status = "failed"
    disabled_reason = None
    async with get_database().session() as session:
        session.add(
            WebhookAttempt(
                delivery_id=delivery_id,
                endpoint_id=endpoint_id,
                attempt=outcome.attempt,
                started_at=started,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                error=outcome.error,
                outcome="delivered"
                if outcome.delivered
                else ("retry" if status == "pending" else "failed"),
            )
        )
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(
                status=status,
                attempts=outcome.attempt,
                next_attempt_at=outcome.next_attempt_at or now,
                leased_until=None,
                lease_owner=None,
                last_status_code=outcome.status_code,
                last_error=outcome.error,
                delivered_at=now if outcome.delivered else None,
            )
        )
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        if endpoint is not None and affects_endpoint:
            disabled_reason = _update_health(endpoint, outcome, gone=gone, now=now)
    return disabled_reason


def _update_health(
    endpoint: WebhookEndpoint, outcome: AttemptOutcome, *, gone: bool, now: dt.datetime
) -> str | None:
    if outcome.delivered:
        endpoint.last_success_at, endpoint.failing_since = now, None
        return None
    endpoint.last_failure_at = now
    endpoint.failing_since = endpoint.failing_since or now
    if not endpoint.enabled:
        return None
    reason = None
    if gone:
        reason = "receiver answered 410 Gone"
    else:
        limit = dt.timedelta(hours=get_settings().webhook_disable_after_hours)
        if now - endpoint.failing_since >= limit:
            since = endpoint.failing_since.isoformat().replace("+00:00", "Z")
            reason = f"failing since {since}; last error: {outcome.error}"
    if reason:
        endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = False, reason, now
    return reason
