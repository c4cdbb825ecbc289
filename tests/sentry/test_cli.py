"""``execflow sentry ...`` in a fresh process against the module's database."""

from __future__ import annotations

import json

from tests.sentry.conftest import SiteFactory, Upstream
from tests.support.processes import run_cli


async def test_probe_health_and_incidents_from_the_cli(
    database_url: str, make_site: SiteFactory, upstream: Upstream
) -> None:
    site_id = await make_site(upstream.url, expected_keyword="Welcome")
    env = {"EXECFLOW_DATABASE_URL": database_url}
    probed = run_cli("sentry", "probe", str(site_id), env=env)
    assert probed.returncode == 0, probed.stderr
    result = json.loads(probed.stdout)
    assert result["ok"] is True and result["checks"]["keyword"]["keyword_found"]
    assert upstream.hits == 1

    health = json.loads(run_cli("sentry", "health", str(site_id), env=env).stdout)
    assert health["site_id"] == site_id and health["probes_last_24h"] == 1
    listed = json.loads(run_cli("sentry", "incidents", "--status", "open", env=env).stdout)
    assert listed["incidents"] == [] and listed["limit"] == 50

    missing = run_cli("sentry", "probe", "999999", env=env)
    assert missing.returncode == 1 and "not found" in missing.stderr
