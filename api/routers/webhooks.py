"""Webhooks: endpoints, signing secrets (shown once), ping, delivery log, redelivery.

The dispatcher that turns ledger entries into signed deliveries runs while the API is up
(``lifespan``) unless ``EXECFLOW_WEBHOOK_DISPATCHER=false`` (then run ``execflow webhooks
worker`` elsewhere).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import MAX_ID, Ok, id_path
from models.settings import get_settings
from tools.webhooks import service
from tools.webhooks.dispatcher import Dispatcher
from tools.webhooks.events import EVENT_TYPES, PING

router = make_router(tags=["webhooks"])


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="HTTPS endpoint to POST to")
    events: list[str] = Field(description="Event types (see GET /api/webhooks/events) or '*'")
    description: str | None = Field(default=None, max_length=500)


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[str] | None = None
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(default=None, description="true re-enables a disabled endpoint")


class SecretRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_hours: float | None = Field(
        default=None, ge=0, le=720, description="How long the old secret keeps signing"
    )


class WebhookRead(BaseModel):
    id: int
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    disabled_at: str | None
    failing_since: str | None
    last_success_at: str | None
    last_failure_at: str | None
    previous_secret_valid_until: str | None
    created_at: str | None
    updated_at: str | None


class AttemptRead(BaseModel):
    attempt: int
    started_at: str | None
    status_code: int | None
    latency_ms: float | None
    error: str | None
    outcome: str


class DeliveryRead(BaseModel):
    id: int
    webhook_id: int
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str | None
    delivered_at: str | None
    attempt_log: list[AttemptRead]


class PingResult(BaseModel):
    event_id: str
    delivery_id: int
    delivered: bool
    status_code: int | None
    latency_ms: float | None
    error: str | None


class WebhookList(Ok):
    webhooks: list[WebhookRead]


class WebhookOne(Ok):
    webhook: WebhookRead


class WebhookWithSecret(Ok):
    webhook: WebhookRead
    secret: str = Field(description="The signing secret. Shown once; store it now.")


class DeliveryList(Ok):
    deliveries: list[DeliveryRead]


class DeliveryOne(Ok):
    delivery: DeliveryRead


class PingOne(Ok):
    ping: PingResult


class EventTypeList(Ok):
    events: dict[str, str]


WebhookId = id_path("Webhook id")


@router.get("/webhooks", response_model=WebhookList)
async def list_webhooks(session: SessionDep) -> WebhookList:
    """List all configured webhook endpoints and their subscription events."""
    return WebhookList.model_validate({"webhooks": await service.list_webhooks(session)})


@router.get("/webhooks/events", response_model=EventTypeList)
async def list_event_types() -> EventTypeList:
    """Every event type a webhook can subscribe to, with a description."""
    return EventTypeList(events={k: v for k, v in EVENT_TYPES.items() if k != PING})


@router.post("/webhooks", status_code=201, response_model=WebhookWithSecret)
async def create_webhook(
    body: WebhookCreate, session: SessionDep, principal: CurrentKey, request_id: RequestId
) -> WebhookWithSecret:
    """Register an endpoint. The signing secret is in this response only."""
    created = await service.create_webhook(
        session, **body.model_dump(), actor=principal.actor, request_id=request_id
    )
    return WebhookWithSecret.model_validate(created)


@router.get("/webhooks/{webhook_id}", response_model=WebhookOne)
async def get_webhook(session: SessionDep, webhook_id: int = WebhookId) -> WebhookOne:
    """One endpoint, with its health and, when disabled, why."""
    return WebhookOne.model_validate(
        {"webhook": await service.get_webhook(session, webhook_id=webhook_id)}
    )


@router.patch("/webhooks/{webhook_id}", response_model=WebhookOne)
async def update_webhook(
    body: WebhookUpdate,
    session: SessionDep,
    principal: CurrentKey,
    request_id: RequestId,
    webhook_id: int = WebhookId,
) -> WebhookOne:
    """Change url, events or description; ``enabled: true`` re-enables a disabled endpoint."""
    updated = await service.update_webhook(
        session,
        webhook_id=webhook_id,
        **body.model_dump(),
        actor=principal.actor,
        request_id=request_id,
    )
    return WebhookOne.model_validate({"webhook": updated})


@router.delete("/webhooks/{webhook_id}", response_model=WebhookOne)
async def delete_webhook(
    session: SessionDep, principal: CurrentKey, request_id: RequestId, webhook_id: int = WebhookId
) -> WebhookOne:
    """Delete an endpoint and its delivery log (admin)."""
    deleted = await service.delete_webhook(
        session, webhook_id=webhook_id, actor=principal.actor, request_id=request_id
    )
    return WebhookOne.model_validate({"webhook": deleted})


@router.post("/webhooks/{webhook_id}/ping", response_model=PingOne)
async def ping_webhook(
    session: SessionDep, principal: CurrentKey, webhook_id: int = WebhookId
) -> PingOne:
    """Send a test event now; the outcome says whether the endpoint answered 2xx."""
    result = await service.ping_webhook(session, webhook_id=webhook_id, actor=principal.actor)
    return PingOne.model_validate({"ping": result})


@router.post("/webhooks/{webhook_id}/rotate-secret", response_model=WebhookWithSecret)
async def rotate_secret(
    session: SessionDep,
    principal: CurrentKey,
    request_id: RequestId,
    body: SecretRotate | None = None,
    webhook_id: int = WebhookId,
) -> WebhookWithSecret:
    """Issue a new signing secret (shown once); the old one also signs during the grace period."""
    rotated = await service.rotate_secret(
        session,
        webhook_id=webhook_id,
        grace_hours=None if body is None else body.grace_hours,
        actor=principal.actor,
        request_id=request_id,
    )
    return WebhookWithSecret.model_validate(rotated)


@router.get("/webhooks/{webhook_id}/deliveries", response_model=DeliveryList)
async def list_deliveries(
    session: SessionDep,
    webhook_id: int = WebhookId,
    status: Literal["pending", "delivered", "failed"] | None = Query(default=None),
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=MAX_ID),
) -> DeliveryList:
    """The delivery log: every event sent, its attempts, status codes, latency and errors."""
    rows = await service.list_deliveries(
        session, webhook_id=webhook_id, status=status, limit=limit, offset=offset
    )
    return DeliveryList.model_validate({"deliveries": rows})


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", response_model=DeliveryOne
)
async def redeliver(
    session: SessionDep,
    principal: CurrentKey,
    request_id: RequestId,
    webhook_id: int = WebhookId,
    delivery_id: int = id_path("Delivery id"),
) -> DeliveryOne:
    """Send a delivery again (same event id and body, fresh signature)."""
    delivery = await service.redeliver(
        session,
        webhook_id=webhook_id,
        delivery_id=delivery_id,
        actor=principal.actor,
        request_id=request_id,
    )
    return DeliveryOne.model_validate({"delivery": delivery})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the webhook dispatcher while the API is up."""
    dispatcher: Any = None
    if get_settings().webhook_dispatcher:
        dispatcher = Dispatcher()
        await dispatcher.start()
        app.state.webhook_dispatcher = dispatcher
    try:
        yield
    finally:
        if dispatcher is not None:
            await dispatcher.stop()
