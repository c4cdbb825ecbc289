"""SSRF through the command line: ``execflow compact URL`` in a fresh process (no test seams)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.hardening.ssrf_support import ALLOWED, install_redirects
from tests.support.processes import run_cli


def test_cli_compact_refuses_and_fetches(tmp_path: Path, servers: Any) -> None:
    """A refused literal (before any fetch), a refused redirect hop, and the positive control."""
    allowed, forbidden = servers
    install_redirects(allowed, forbidden, "/asset.png")
    env = {
        "EXECFLOW_DATA_DIR": str(tmp_path),
        "EXECFLOW_OUTBOUND_ALLOWLIST": ALLOWED,
        "EXECFLOW_LOG_FORMAT": "text",
    }
    refused = run_cli("compact", "https://169.254.169.254/latest/meta-data/", env=env)
    assert refused.returncode != 0 and "SSRF_BLOCKED" in refused.stderr, refused.stderr
    for route in ("/to-forbidden", "/to-metadata", "/to-decimal"):
        redirected = run_cli("compact", allowed.base + route, env=env)
        assert redirected.returncode != 0, route
        assert json.loads(redirected.stdout)["error"]["code"] == "SSRF_BLOCKED", route
    fetched = run_cli("compact", allowed.base + "/asset.png", env=env)
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    assert json.loads(fetched.stdout)["status"] == "succeeded"
    assert forbidden.hits == [] and allowed.hits.count("GET /asset.png") == 1
