"""The production layout of docs/deployment.md on loopback, for the cluster test and its bench.

``execflow serve --no-workers`` replicas behind the shipped nginx configuration, ``execflow
worker`` processes (jobs and webhook deliveries), one ``execflow beat``, one PostgreSQL database
and one Redis prefix. Every process shares one data directory (the secret and ledger keys,
CompactEdge's asset files), as hosts would share a mounted volume and the secret files.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.nginx import nginx_config, run_nginx
from tests.support.processes import Proc, free_port, wait_started


@dataclass
class Cluster:
    """The processes of one installation; ``base`` is nginx, the one address clients use."""

    root: Path
    env: dict[str, str]
    replica_ports: list[int]
    replicas: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    beat: Proc | None = None
    worker_concurrency: int = 2
    base: str = ""
    _starts: int = 0

    @property
    def data_dir(self) -> Path:
        return Path(self.env["EXECFLOW_DATA_DIR"])

    def _log(self, name: str) -> Path:
        self._starts += 1
        return self.root / "logs" / f"{self._starts:02d}-{name}.log"

    def role_env(self, **extra: str) -> dict[str, str]:
        return {**self.env, **extra}

    def spawn_replica(self, index: int) -> Proc:
        """Start replica ``index`` on its fixed port (nginx knows it); do not wait."""
        port = self.replica_ports[index]
        args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--no-workers"]
        # API replicas only serve: webhook deliveries run in the workers.
        env = self.role_env(EXECFLOW_WEBHOOK_DISPATCHER="false")
        proc = Proc(args, env, self._log(f"replica{index}-{port}"))
        if index < len(self.replicas):
            self.replicas[index] = proc
        else:
            self.replicas.append(proc)
        return proc

    def wait_replica(self, index: int) -> None:
        proc, port = self.replicas[index], self.replica_ports[index]
        wait_started(proc.popen, f"http://127.0.0.1:{port}/readyz", proc.log_path)

    def spawn_worker(self) -> Proc:
        args = ["worker", "--concurrency", str(self.worker_concurrency), "--loglevel", "INFO"]
        proc = Proc(args, self.role_env(), self._log(f"worker{len(self.workers)}"))
        self.workers.append(proc)
        return proc

    def spawn_beat(self) -> Proc:
        self.beat = Proc(["beat", "--poll", "0.5"], self.role_env(), self._log("beat"))
        return self.beat

    def restart_replica(self, index: int) -> Proc:
        proc = self.spawn_replica(index)
        self.wait_replica(index)
        return proc

    def add_worker(self) -> Proc:
        proc = self.spawn_worker()
        proc.wait_log("execflow worker celery:", timeout=180)
        return proc

    def processes(self) -> dict[str, Proc]:
        """Every live ExecFlow process by a readable name (for RSS figures)."""
        named = {f"replica{i}": p for i, p in enumerate(self.replicas)}
        named |= {f"worker{i}": p for i, p in enumerate(self.workers)}
        if self.beat is not None:
            named["beat"] = self.beat
        return {k: p for k, p in named.items() if p.popen.poll() is None}

    def stop(self) -> None:
        procs = [*self.replicas, *self.workers, *([self.beat] if self.beat else [])]
        with concurrent.futures.ThreadPoolExecutor(max(1, len(procs))) as pool:
            list(pool.map(Proc.stop, procs))


@contextmanager
def run_cluster(
    root: Path,
    env: Mapping[str, str],
    *,
    replicas: int = 2,
    workers: int = 2,
    worker_concurrency: int = 2,
) -> Iterator[Cluster]:
    """Start the whole layout (every process at once: they start in parallel), wait until each
    is ready, put nginx in front of the replicas; stop everything afterwards.

    ``env`` must name the database, Redis, prefix, data dir and ``EXECFLOW_QUEUE_BACKEND=celery``;
    the database must already be migrated (``execflow db upgrade`` runs once per release).
    """
    (root / "logs").mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(replicas)]
    cluster = Cluster(root, dict(env), ports, worker_concurrency=worker_concurrency)
    with ExitStack() as stack:
        stack.callback(cluster.stop)
        for i in range(replicas):
            cluster.spawn_replica(i)
        for _ in range(workers):
            cluster.spawn_worker()
        cluster.spawn_beat()
        for i in range(replicas):
            cluster.wait_replica(i)
        for worker in cluster.workers:
            worker.wait_log("execflow worker celery:", timeout=180)
        assert cluster.beat is not None
        cluster.beat.wait_log("execflow beat running", timeout=180)
        config = nginx_config(free_port(), cluster.replica_ports)
        cluster.base = stack.enter_context(run_nginx(root / "nginx", config))
        yield cluster
