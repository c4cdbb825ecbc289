"""The secret-encryption key file is created once, whoever gets there first.

In the cluster layout every replica, worker and proxy shares one data directory; on a first
start several of them can find the key file missing at the same moment. Each must end up with
the same key: one that wrote its own key over another's would make every secret the other had
already encrypted unreadable.
"""

from __future__ import annotations

import multiprocessing
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

from cryptography.fernet import Fernet

from models import crypto

PROCESSES = 8
_generate = Fernet.generate_key


def _slow_key() -> bytes:
    time.sleep(0.2)  # a loaded machine: every process is between "missing?" and "written"
    return _generate()


def _first_use(path: str, barrier: Barrier, results: multiprocessing.Queue) -> None:
    crypto.Fernet.generate_key = _slow_key  # type: ignore[method-assign]  (this child only)
    barrier.wait()  # all at once, as processes starting together do
    results.put(crypto.read_keys(Path(path)))


def test_concurrent_first_use_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_first_use, args=(str(path), barrier, results)) for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    keys = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert len({tuple(k) for k in keys}) == 1, "processes created different keys"
    assert keys[0] == crypto.read_keys(path) and len(keys[0]) == 1
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temporary files left
