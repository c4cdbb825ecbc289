"""Sentry V: site probes, incidents, health score, 24-hour prediction and shield mode.

The agents call ``get_site_health``, ``list_incidents`` and ``set_shield_mode``; the API's
lifespan runs ``ProbeScheduler``. See docs/sentry.md.
"""

from tools.sentry.health import get_site_health
from tools.sentry.incidents import list_incidents
from tools.sentry.scheduler import ProbeScheduler, probe_site
from tools.sentry.shield import set_shield_mode
from tools.sentry.timeline import note_incident_action

__all__ = [
    "ProbeScheduler",
    "get_site_health",
    "list_incidents",
    "note_incident_action",
    "probe_site",
    "set_shield_mode",
]
