"""A dispatcher killed (SIGKILL) mid-delivery loses nothing: the delivery is retried, same id."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from models import ledger
from models.db import Database
from models.settings import Settings, configure
from models.webhooks import WebhookDelivery
from tests.support.processes import ROOT, execflow_env, free_port, wait_http
from tests.webhooks.conftest import FAST, wait_for
from tests.webhooks.receiver import Receiver, Step, verify_fluxcybers
from tools.webhooks.service import create_webhook


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """This process only records events; the `execflow serve` subprocess dispatches."""
    data_dir = tmp_path_factory.mktemp("data")
    s = Settings(
        data_dir=data_dir,
        database_url=database_url,
        log_format="text",
        **{**FAST, "webhook_timeout_seconds": 2.0, "webhook_dispatcher": False},
    )
    configure(s)
    return s


@contextmanager
def execflow_serve(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    env = execflow_env(
        {
            "EXECFLOW_DATA_DIR": str(settings.data_dir),
            "EXECFLOW_DATABASE_URL": settings.db_url,
            "EXECFLOW_OUTBOUND_ALLOWLIST": "127.0.0.1",
            "EXECFLOW_WEBHOOK_RETRY_SCHEDULE": "0.2,0.3,0.4,0.5",
            "EXECFLOW_WEBHOOK_RETRY_JITTER": "0",
            "EXECFLOW_WEBHOOK_TIMEOUT_SECONDS": "2",
            "EXECFLOW_WEBHOOK_POLL_SECONDS": "0.05",
            "EXECFLOW_LOG_FORMAT": "text",
        }
    )
    log = open(Path(settings.data_dir) / f"serve-{port}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--no-workers"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()


async def test_sigkill_mid_delivery_loses_nothing(
    settings: Settings, database: Database, receiver: Receiver
) -> None:
    async with database.session() as session:
        created = await create_webhook(
            session, url=receiver.url, events=["command_executed"], actor="test"
        )
    secret = created["secret"]
    receiver.plan(Step("hold"))  # the first delivery hangs until we release it

    with execflow_serve(settings) as proc:
        first = await ledger.record("command_executed", actor="key:1", params={"n": 1})
        await wait_for(receiver.holding.is_set, timeout=60)
        proc.send_signal(signal.SIGKILL)  # dies with the delivery in flight
        proc.wait(timeout=10)
    receiver.release.set()

    # events recorded while no dispatcher runs
    later = [
        await ledger.record("command_executed", actor="key:1", params={"n": n}) for n in (2, 3)
    ]
    expected = {f"evt_{s}" for s in (first, *later)}

    def copies_of_first() -> int:
        return sum(r.id == f"evt_{first}" for r in receiver.received)

    # The held request reaches the receiver once released even though its sender is dead; the
    # database never saw a 2xx for it, so the restarted dispatcher must send it again (after
    # the dead worker's lease lapses), whatever order the other events arrive in.
    with execflow_serve(settings):
        await wait_for(
            lambda: expected <= receiver.acknowledged_ids() and copies_of_first() >= 2,
            timeout=90,
        )

    assert receiver.unique_ids() == expected  # nothing lost, nothing invented
    copies = [r for r in receiver.received if r.id == f"evt_{first}"]
    assert len(copies) >= 2  # at-least-once: the interrupted one came again, same id and body
    assert len({c.body for c in copies}) == 1
    assert all(verify_fluxcybers(secret, r.headers, r.body) for r in receiver.received)
    async with database.session() as session:
        rows = (await session.execute(select(WebhookDelivery))).scalars().all()
    assert {r.event_id for r in rows} == expected
