"""Executor fixtures: real sshd instances on loopback, settings with a test playbooks dir."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.settings import Settings, configure
from tests.conftest import auth
from tests.executor.sshd import Keys, SshdFarm

PLAYBOOKS = Path(__file__).parent / "playbooks"


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys.generate(tmp_path_factory.mktemp("sshkeys"))


@pytest.fixture(scope="session")
def sshd_farm(ssh_keys: Keys) -> Iterator[SshdFarm]:
    """Three sshd instances for the whole session (stopped afterwards)."""
    farm = SshdFarm(ssh_keys)
    farm.start(3)  # stops what it started if it fails
    try:
        yield farm
    finally:
        farm.stop()


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The shared fixture's settings plus the test playbooks and no background probes."""
    data_dir = tmp_path_factory.mktemp("data")
    s = Settings(
        data_dir=data_dir,
        database_url=database_url,
        log_format="text",
        playbooks_dir=PLAYBOOKS,
        server_probe_interval=0,
        exec_max_output_bytes=4096,
    )
    configure(s)
    return s


def server_body(farm: SshdFarm, keys: Keys, index: int = 0, **overrides: Any) -> dict[str, Any]:
    instance = farm.instances[index]
    body: dict[str, Any] = {
        "name": f"srv-{uuid.uuid4().hex[:8]}",
        "host": "127.0.0.1",
        "port": instance.port,
        "username": "root",
        "private_key": keys.client_private,
        "host_key": instance.known_hosts_line(keys),
        "tags": ["test"],
    }
    body.update(overrides)
    return body


async def create_server(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> int:
    response = await client.post("/api/servers", json=body, headers=auth(key))
    assert response.status_code == 201, response.text
    return int(response.json()["server"]["id"])
