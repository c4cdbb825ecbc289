"""Webhooks: signed, retried, never lost. See docs/webhooks.md.

``service`` is the API/agent surface, ``events`` the subscribable types, ``payload`` and
``signing`` the bytes on the wire, ``schedule`` the retry policy, ``delivery`` one attempt and
``dispatcher`` the loop that turns ledger entries into deliveries.
"""

from tools.webhooks.events import EVENT_TYPES, register_event_type
from tools.webhooks.service import (
    create_webhook,
    delete_webhook,
    get_webhook,
    list_deliveries,
    list_webhooks,
    ping_webhook,
    redeliver,
    rotate_secret,
    update_webhook,
)

__all__ = [
    "EVENT_TYPES",
    "create_webhook",
    "delete_webhook",
    "get_webhook",
    "list_deliveries",
    "list_webhooks",
    "ping_webhook",
    "redeliver",
    "register_event_type",
    "rotate_secret",
    "update_webhook",
]
