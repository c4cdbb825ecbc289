"""Fixtures for the hardening suites: a real ``execflow serve`` on each database backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from models.settings import Settings, configure
from tests.executor.conftest import ssh_keys, sshd_farm  # noqa: F401 - fixtures
from tests.hardening.ssrf_support import servers, tls_servers  # noqa: F401 - fixtures
from tests.support.netguard import netguard  # noqa: F401 - a fixture for the SSRF suites
from tests.support.processes import serve


@pytest.fixture(scope="module")
def served(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """(base URL, log file) of an ``execflow serve`` subprocess on this module's database."""
    data_dir = tmp_path_factory.mktemp("serve")
    env = {
        "EXECFLOW_DATA_DIR": str(data_dir),
        "EXECFLOW_DATABASE_URL": settings.db_url,
        "EXECFLOW_LOG_FORMAT": "json",
        "EXECFLOW_LOG_LEVEL": "DEBUG",
        "EXECFLOW_AUTH_CACHE_SECONDS": "0",
        "EXECFLOW_WEBHOOK_DISPATCHER": "false",
    }
    with serve(env) as base:
        port = base.rsplit(":", 1)[1]
        yield base, data_dir / f"serve-{port}.log"


def configure_module(database_url: str, tmp: pytest.TempPathFactory, **overrides: Any) -> Settings:
    """Settings for one module of these suites (no background probes), made current."""
    s = Settings(
        data_dir=tmp.mktemp("data"),
        database_url=database_url,
        log_format="text",
        sentry_scheduler=False,
        server_probe_interval=0,
        **overrides,
    )
    configure(s)
    return s
