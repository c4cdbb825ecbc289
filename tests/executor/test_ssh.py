"""The SSH pool and runners against real sshd instances (no database)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.errors import BadRequest
from models.settings import Settings, configure
from tests.executor.sshd import Keys, SshdFarm, free_port, login_user
from tools.executor import run_local, run_ssh
from tools.ssh import (
    AuthFailed,
    CommandTimeout,
    HostKeyMismatch,
    HostUnreachable,
    SSHPool,
    Target,
    parse_host_key,
)


@pytest.fixture(scope="module", autouse=True)
def small_output_cap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    configure(Settings(data_dir=tmp_path_factory.mktemp("ssh"), exec_max_output_bytes=2048))
    yield
    configure(None)


def target(farm: SshdFarm, keys: Keys, **overrides: object) -> Target:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": farm.instances[0].port,
        "username": "root",
        "credential_kind": "private_key",
        "credential": keys.client_private,
        "host_key": farm.instances[0].known_hosts_line(keys),
        "server_id": 1,
    }
    values.update(overrides)
    return Target(**values)  # type: ignore[arg-type]


def _gone(pid: int) -> bool:
    """Exited: no /proc entry, or a zombie no one reaps (PID 1 in a container may not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith(("Z", "X"))
    except (FileNotFoundError, IndexError):
        return True


async def test_exit_code_stdout_stderr_and_hashes(sshd_farm: SshdFarm, ssh_keys: Keys) -> None:
    pool = SSHPool()
    try:
        result, _ = await run_ssh(
            pool, target(sshd_farm, ssh_keys), "echo out; echo err >&2; exit 7", timeout=20
        )
        assert result["exit_code"] == 7
        assert result["stdout"] == "out\n" and result["stderr"] == "err\n"
        assert not result["truncated"]
        import hashlib

        assert result["stdout_sha256"] == hashlib.sha256(b"out\n").hexdigest()
    finally:
        await pool.close()


async def test_pool_reuses_one_connection_and_reconnects(
    sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    pool = SSHPool()
    t = target(sshd_farm, ssh_keys)
    try:
        for _ in range(3):
            assert (await run_ssh(pool, t, "true", timeout=20))[0]["exit_code"] == 0
        assert pool.connects == 1
        results = await asyncio.gather(
            *(run_ssh(pool, t, "echo $$", timeout=20) for _ in range(12))
        )
        assert all(r["exit_code"] == 0 for r, _ in results)  # 12 > MaxSessions: slots queue
        assert pool.connects == 1
        (await pool.get(t)).conn.close()  # the connection drops
        await asyncio.sleep(0.2)
        assert (await run_ssh(pool, t, "true", timeout=20))[0]["exit_code"] == 0
        assert pool.connects == 2
    finally:
        await pool.close()


async def test_timeout_kills_the_remote_process_group(
    sshd_farm: SshdFarm, ssh_keys: Keys, tmp_path: Path
) -> None:
    pool = SSHPool()
    pidfile = tmp_path / "pid"
    try:
        with pytest.raises(CommandTimeout) as info:
            await run_ssh(
                pool,
                target(sshd_farm, ssh_keys),
                f"sleep 60 & echo $! > {pidfile}; wait",
                timeout=1.5,
            )
        assert info.value.code == "TIMEOUT" and info.value.status_code == 504
        pid = int(pidfile.read_text())
        for _ in range(50):
            if _gone(pid):
                break
            await asyncio.sleep(0.1)
        assert _gone(pid), "the remote child outlived the timeout"
        # the connection is still usable afterwards
        assert (await run_ssh(pool, target(sshd_farm, ssh_keys), "true", timeout=20))[0][
            "exit_code"
        ] == 0
    finally:
        await pool.close()


async def test_local_timeout_kills_the_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(CommandTimeout):
        await run_local(f"sleep 60 & echo $! > {pidfile}; wait", timeout=1)
    pid = int(pidfile.read_text())
    for _ in range(50):
        if _gone(pid):
            break
        await asyncio.sleep(0.1)
    assert _gone(pid)


async def test_output_cap_truncates_but_hashes_everything(
    sshd_farm: SshdFarm, ssh_keys: Keys
) -> None:
    pool = SSHPool()
    try:
        result, _ = await run_ssh(
            pool, target(sshd_farm, ssh_keys), "head -c 100000 /dev/zero | tr '\\0' a", timeout=20
        )
        import hashlib

        assert result["truncated"] is True and len(result["stdout"]) == 2048
        assert result["stdout_sha256"] == hashlib.sha256(b"a" * 100000).hexdigest()
    finally:
        await pool.close()


async def test_host_key_checks(sshd_farm: SshdFarm, ssh_keys: Keys) -> None:
    pool = SSHPool()
    try:
        by_fp = target(sshd_farm, ssh_keys, host_key=ssh_keys.host_fingerprint, server_id=2)
        assert (await run_ssh(pool, by_fp, "true", timeout=20))[0]["exit_code"] == 0
        for wrong in (ssh_keys.other_host_line, "SHA256:" + "A" * 43):
            with pytest.raises(HostKeyMismatch) as info:
                await run_ssh(
                    pool,
                    target(sshd_farm, ssh_keys, host_key=wrong, server_id=3),
                    "true",
                    timeout=20,
                )
            assert info.value.code == "HOST_KEY_MISMATCH" and info.value.status_code == 502
        with pytest.raises(HostKeyMismatch):  # no key and no trust-on-first-use: refused
            await run_ssh(
                pool, target(sshd_farm, ssh_keys, host_key=None, server_id=4), "true", timeout=20
            )
        tofu = target(sshd_farm, ssh_keys, host_key=None, trust_on_first_use=True, server_id=5)
        _, seen = await run_ssh(pool, tofu, "true", timeout=20)
        assert seen == ssh_keys.host_key_line
    finally:
        await pool.close()


async def test_wrong_credential_and_unreachable(sshd_farm: SshdFarm, ssh_keys: Keys) -> None:
    pool = SSHPool()
    try:
        with pytest.raises(AuthFailed) as auth:
            await run_ssh(
                pool,
                target(sshd_farm, ssh_keys, credential=ssh_keys.stranger_private),
                "true",
                timeout=20,
            )
        assert auth.value.code == "AUTH_FAILED"
        with pytest.raises(AuthFailed):
            await run_ssh(
                pool,
                target(sshd_farm, ssh_keys, credential_kind="password", credential="wrong"),
                "true",
                timeout=20,
            )
        with pytest.raises(HostUnreachable) as down:
            await run_ssh(pool, target(sshd_farm, ssh_keys, port=free_port()), "true", timeout=20)
        assert down.value.code == "UNREACHABLE" and down.value.status_code == 502
    finally:
        await pool.close()


async def test_streaming_sink_gets_lines_in_order(sshd_farm: SshdFarm, ssh_keys: Keys) -> None:
    pool = SSHPool()
    lines: list[tuple[str, str]] = []
    try:
        await run_ssh(
            pool,
            target(sshd_farm, ssh_keys),
            "for i in 1 2 3; do echo line$i; sleep 0.1; done; echo oops >&2",
            timeout=20,
            sink=lambda stream, line: lines.append((stream, line)),
        )
        assert lines == [
            ("stdout", "line1"),
            ("stdout", "line2"),
            ("stdout", "line3"),
            ("stderr", "oops"),
        ]
    finally:
        await pool.close()


def test_parse_host_key_forms(ssh_keys: Keys) -> None:
    assert parse_host_key(ssh_keys.host_key_line).key is not None
    assert parse_host_key(f"[127.0.0.1]:2222,host {ssh_keys.host_key_line} c").key is not None
    assert parse_host_key(ssh_keys.host_fingerprint).fingerprint == ssh_keys.host_fingerprint
    for bad in ("nonsense", "ssh-ed25519 notbase64!!", "@cert-authority * ssh-ed25519 AAAA"):
        with pytest.raises(BadRequest):
            parse_host_key(bad)


async def test_marker_file_never_created_by_harmless_local_run() -> None:
    marker = f"/tmp/x-{uuid.uuid4().hex}"
    result = await run_local(f"printf '%s' '$(touch {marker})'", timeout=10)
    assert result["stdout"] == f"$(touch {marker})"
    assert not os.path.exists(marker)


async def test_password_login(ssh_keys: Keys) -> None:
    """A password credential against an sshd that allows passwords, as a fixture-made user."""
    password = uuid.uuid4().hex
    farm = SshdFarm(ssh_keys)
    pool = SSHPool()
    with login_user(f"ef-pw-{uuid.uuid4().hex[:6]}", password=password) as user:
        try:
            [instance] = farm.start(1, passwords=True)
            common = {
                "host": "127.0.0.1",
                "port": instance.port,
                "username": user,
                "credential_kind": "password",
                "host_key": ssh_keys.host_key_line,
            }
            result, _ = await run_ssh(
                pool, Target(**common, credential=password, server_id=1), "id -un", timeout=20
            )
            assert result["stdout"].strip() == user
            with pytest.raises(AuthFailed):
                await run_ssh(
                    pool, Target(**common, credential="wrong", server_id=2), "true", timeout=20
                )
        finally:
            await pool.close()
            farm.stop()
