"""The event types a webhook can subscribe to: every ledger action, plus lifecycle events.

Producers append lifecycle events (``agent_task_completed``, ``incident_opened`` ...) to the
ledger like any other action, so one durable stream feeds every webhook. A module adding a new
ledger action registers it here (``register_event_type``) so subscriptions may name it; events
with unregistered names are still delivered to ``*`` subscribers.
"""

from __future__ import annotations

WILDCARD = "*"
PING = "ping"

LIFECYCLE_EVENTS: dict[str, str] = {
    "agent_task_created": "An agent task was queued.",
    "agent_task_completed": "An agent task finished successfully.",
    "agent_task_failed": "An agent task failed or was cancelled.",
    "approval_requested": "An agent paused for a human to approve a state-changing tool call.",
    "approval_decided": "A human approved or rejected a pending tool call.",
    "incident_opened": "Sentry opened an incident for a site.",
    "incident_resolved": "An incident was resolved.",
}

LEDGER_EVENTS: dict[str, str] = {
    "api_key_created": "An API key was created (the key itself is never included).",
    "api_key_revoked": "An API key was revoked.",
    "server_created": "A server was registered.",
    "server_updated": "A server's settings changed.",
    "server_deleted": "A server was removed.",
    "server_host_key_pinned": "A server's SSH host key was pinned.",
    "command_executed": "A command ran on a server (exit code and output hashes).",
    "command_denied": "A command was refused by policy.",
    "playbook_run": "A playbook ran (or was dry-run) against a server.",
    "quarantine": "A target (IP, host, CIDR) was quarantined.",
    "quarantine_released": "A quarantine was lifted.",
    "shield_mode_changed": "Shield mode was switched on or off for a site.",
    "vaultshield_rule_added": "A VaultShield blocking rule was added.",
    "vaultshield_rule_deleted": "A VaultShield rule was removed.",
    "threat_feed_imported": "A threat feed was imported.",
    "site_created": "A protected site was registered.",
    "site_updated": "A protected site's settings changed.",
    "site_deleted": "A protected site was removed.",
    "webhook_created": "A webhook endpoint was registered (never with its secret).",
    "webhook_updated": "A webhook endpoint was changed or re-enabled.",
    "webhook_deleted": "A webhook endpoint was deleted.",
    "webhook_secret_rotated": "A webhook endpoint's signing secret was rotated.",
    "webhook_disabled": "A webhook endpoint was disabled (410 Gone, or failing for days).",
    "webhook_redelivered": "A delivery was queued again by hand.",
}

EVENT_TYPES: dict[str, str] = {
    **LEDGER_EVENTS,
    **LIFECYCLE_EVENTS,
    PING: "A test event sent by POST /api/webhooks/{id}/ping (never fanned out).",
}


def register_event_type(name: str, description: str) -> None:
    """Make a new ledger action subscribable by name."""
    EVENT_TYPES.setdefault(name, description)


def is_known(name: str) -> bool:
    return name == WILDCARD or name in EVENT_TYPES


def subscribed(events: list[str], event_type: str) -> bool:
    """Does a subscription list cover ``event_type``? Pings go only where they are sent."""
    if event_type == PING:
        return False
    return WILDCARD in events or event_type in events
