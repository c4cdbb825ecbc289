"""VaultShield: traffic rules, the decision engine, the proof-of-work challenge and the proxy.

The agents and the API call the service functions re-exported here; the proxy
(``tools.vaultshield.proxy``) is its own process, started by ``execflow shield``.
"""

from tools.vaultshield.service import (
    add_vaultshield_rule,
    delete_vaultshield_rule,
    get_vaultshield_status,
    list_vaultshield_rules,
    publish_rules_changed,
)
from tools.vaultshield.stats import site_traffic_stats

__all__ = [
    "add_vaultshield_rule",
    "delete_vaultshield_rule",
    "get_vaultshield_status",
    "list_vaultshield_rules",
    "publish_rules_changed",
    "site_traffic_stats",
]
