"""Executor benchmark: API overhead on a pooled connection, and a 50-target fan-out vs Ansible.

    .venv/bin/python -m evals.bench_exec [--targets 50] [--calls 10] [--ansible-limit 75]

Everything is local: real sshd instances on 127.0.0.1 (one per target), a fresh SQLite
database, the API in-process over ASGI. Figures printed:

1. ``true`` on one server through ``POST /api/servers/{id}/execute`` with a pooled connection,
   against ``conn.run("true")`` on an open raw asyncssh connection to the same sshd, same run.
2. ``uptime`` on every target through ``POST /api/servers/execute`` (cold: handshakes included;
   warm: pooled), against ``ansible all -m command -a uptime -f N`` on the same sshd instances.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncssh
import httpx

from api.app import create_app
from api.keys import create_api_key
from models import migrate
from models.settings import Settings, configure
from tests.executor.sshd import Keys, SshdFarm, login_user


def _ms(seconds: list[float]) -> str:
    return (
        f"median {statistics.median(seconds) * 1000:.1f} ms, "
        f"mean {statistics.fmean(seconds) * 1000:.1f} ms"
    )


async def _api_true(client: httpx.AsyncClient, headers: dict[str, str], sid: int) -> float:
    started = time.perf_counter()
    response = await client.post(
        f"/api/servers/{sid}/execute", json={"command": "true"}, headers=headers
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["exit_code"] == 0, response.text
    return elapsed


async def bench(targets: int, calls: int, ansible_limit: float, user: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="ef-bench-exec-"))
    keys = Keys.generate(work / "keys")
    if user != "root":  # sshd reads authorized_keys with the user's privileges
        os.chmod(work, 0o711)
        os.chmod(work / "keys", 0o711)
        os.chmod(work / "keys" / "authorized_keys", 0o644)
    farm = SshdFarm(keys)
    try:
        t0 = time.perf_counter()
        farm.start(targets)
        print(f"started {targets} sshd instances in {time.perf_counter() - t0:.1f} s")
        url = f"sqlite+aiosqlite:///{work / 'bench.db'}"
        await asyncio.to_thread(migrate.upgrade, url)
        settings = Settings(
            data_dir=work,
            database_url=url,
            log_format="text",
            server_probe_interval=0,
            log_level="WARNING",
        )
        configure(settings)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await _run(app, keys, farm, calls, ansible_limit, work, user)
    finally:
        farm.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(f"/tmp/.ansible-{work.name}", ignore_errors=True)


async def _run(
    app: Any, keys: Keys, farm: SshdFarm, calls: int, ansible_limit: float, work: Path, user: str
) -> None:
    from models.db import get_database

    async with get_database().session() as session:
        _, token = await create_api_key(
            session,
            name="bench",
            scope="admin",
            plan="enterprise",
            rate_per_minute=10**6,
            burst=None,
            actor="bench",
        )
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as c:
        ids = []
        for i, instance in enumerate(farm.instances):
            body = {
                "name": f"bench-{i}",
                "host": "127.0.0.1",
                "port": instance.port,
                "username": user,
                "private_key": keys.client_private,
                "host_key": instance.known_hosts_line(keys),
                "tags": ["bench"],
            }
            response = await c.post("/api/servers", json=body, headers=headers)
            assert response.status_code == 201, response.text
            ids.append(response.json()["server"]["id"])

        # 1. latency of `true`, API (pooled) vs raw asyncssh on an open connection
        await _api_true(c, headers, ids[0])  # warm the pool
        api = [await _api_true(c, headers, ids[0]) for _ in range(calls)]
        port = farm.instances[0].port
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username=user,
            known_hosts=None,
            client_keys=[asyncssh.import_private_key(keys.client_private)],
            agent_path=None,
        ) as conn:
            await conn.run("true")
            raw = []
            for _ in range(calls):
                started = time.perf_counter()
                await conn.run("true", check=True)
                raw.append(time.perf_counter() - started)
        overhead = statistics.median(api) - statistics.median(raw)
        print(f"\n`true` x{calls} on one server")
        print(f"  API (pooled connection): {_ms(api)}")
        print(f"  raw asyncssh conn.run:   {_ms(raw)}")
        print(f"  API overhead (median):   {overhead * 1000:.1f} ms")

        # 2. fan-out of `uptime` across every target
        fan = {}
        for label in ("cold", "warm"):
            if label == "cold":
                from tools.executor import close_pool

                await close_pool()
            started = time.perf_counter()
            response = await c.post(
                "/api/servers/execute",
                json={"command": "uptime", "tag": "bench", "concurrency": len(ids)},
                headers=headers,
            )
            fan[label] = time.perf_counter() - started
            data = response.json()
            assert response.status_code == 200, response.text
            print(
                f"\nExecFlow fan-out `uptime` on {len(ids)} targets ({label}): "
                f"{fan[label]:.2f} s, {data['succeeded']} ok, {data['failed']} failed"
            )
    if ansible_limit > 0:
        ansible, limit = _ansible(keys, farm, work, ansible_limit, user)
        if ansible is not None:
            print(f"\nratio ansible / execflow (cold): {ansible / fan['cold']:.1f}x")
            print(f"ratio ansible / execflow (warm): {ansible / fan['warm']:.1f}x")
        elif limit:
            print(f"\nratio ansible / execflow (cold): more than {limit / fan['cold']:.1f}x")
            print(f"ratio ansible / execflow (warm): more than {limit / fan['warm']:.1f}x")


def _ansible(
    keys: Keys, farm: SshdFarm, work: Path, limit: float, user: str
) -> tuple[float | None, float]:
    binary = Path(sys.executable).parent / "ansible"
    if not binary.exists():
        print("\nansible not installed (pip install -e '.[evals]'); skipped")
        return None, 0.0
    key_file = work / "client_key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys.client_private)
    known = work / "known_hosts"
    known.write_text("".join(i.known_hosts_line(keys) + "\n" for i in farm.instances))
    interpreter = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    inventory = work / "inventory.ini"
    inventory.write_text(
        "[bench]\n"
        + "".join(
            f"t{n} ansible_host=127.0.0.1 ansible_port={i.port}\n"
            for n, i in enumerate(farm.instances)
        )
        + "[bench:vars]\n"
        + f"ansible_user={user}\nansible_ssh_private_key_file={key_file}\n"
        + f"ansible_python_interpreter={interpreter}\n"
        + f"ansible_ssh_common_args='-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes'\n"
    )
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-local"),
        "ANSIBLE_REMOTE_TMP": f"/tmp/.ansible-{work.name}",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_NOCOLOR": "1",
        # ansible's default multiplexing, with masters that leave soon after the run
        "ANSIBLE_SSH_ARGS": "-C -o ControlMaster=auto -o ControlPersist=5s",
    }
    forks = len(farm.instances)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            str(binary),
            "all",
            "-i",
            str(inventory),
            "-m",
            "command",
            "-a",
            "uptime",
            "-f",
            str(forks),
            "-o",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # so a timeout can stop ansible's forks and ssh clients too
    )
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        print(f"\nansible ad-hoc `uptime` -f {forks}: not finished after {limit:.0f} s (stopped)")
        return None, limit
    finally:
        _end_leftovers(work)
    elapsed = time.perf_counter() - started
    ok = stdout.count("| CHANGED") + stdout.count("| SUCCESS")
    print(
        f"\nansible ad-hoc `uptime` -f {forks} on {forks} targets: {elapsed:.2f} s, "
        f"{ok} ok, rc {proc.returncode}"
    )
    if proc.returncode != 0:
        print(stdout[-2000:], stderr[-2000:])
    return elapsed, limit


def _end_leftovers(work: Path) -> None:
    """Ansible's forks and ssh masters may outlive it (own sessions): end those whose command
    line names this run's private work directory, by pid."""
    mine = str(work)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if mine in cmdline and "sshd" not in cmdline.split(" ", 1)[0]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument(
        "--ansible-limit", type=float, default=90, help="seconds Ansible may take; 0 skips it"
    )
    parser.add_argument(
        "--user",
        default="execflow-bench",
        help="login user; the default is created with /bin/sh for the run and removed (root's "
        "~/.bashrc runs for every session)",
    )
    args = parser.parse_args()
    if args.user == "root":
        asyncio.run(bench(args.targets, args.calls, args.ansible_limit, "root"))
        return
    with login_user(args.user) as user:
        asyncio.run(bench(args.targets, args.calls, args.ansible_limit, user))


if __name__ == "__main__":
    main()
