"""Real OpenSSH servers on loopback ports for tests and the benchmark.

Each instance gets a generated config, shares one generated host key and one authorized client
key, logs in as root with that key only, and listens on 127.0.0.1 alone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass
class Keys:
    """One host key, one authorized client key, one stranger key (not authorized)."""

    root: Path
    host_key_line: str = ""
    host_fingerprint: str = ""
    client_private: str = ""
    stranger_private: str = ""
    other_host_line: str = ""

    @classmethod
    def generate(cls, root: Path) -> Keys:
        root.mkdir(parents=True, exist_ok=True)
        host = asyncssh.generate_private_key("ssh-ed25519")
        client = asyncssh.generate_private_key("ssh-ed25519")
        stranger = asyncssh.generate_private_key("ssh-ed25519")
        other = asyncssh.generate_private_key("ssh-ed25519")
        _write_private(root / "host_ed25519", host.export_private_key())
        (root / "authorized_keys").write_bytes(client.export_public_key())
        os.chmod(root / "authorized_keys", 0o600)
        return cls(
            root=root,
            host_key_line=host.export_public_key().decode().strip(),
            host_fingerprint=host.get_fingerprint("sha256"),
            client_private=client.export_private_key().decode(),
            stranger_private=stranger.export_private_key().decode(),
            other_host_line=other.export_public_key().decode().strip(),
        )


@dataclass
class Sshd:
    port: int
    config: Path
    process: subprocess.Popen[bytes] | None = None

    def known_hosts_line(self, keys: Keys) -> str:
        return f"[127.0.0.1]:{self.port} {keys.host_key_line}"


@dataclass
class SshdFarm:
    """Start and stop several sshd instances sharing ``keys``."""

    keys: Keys
    instances: list[Sshd] = field(default_factory=list)

    def start(
        self, count: int = 1, *, max_startups: str = "10:30:100", passwords: bool = False
    ) -> list[Sshd]:
        """Start ``count`` instances; one that dies at start (a port taken meanwhile) is
        restarted on another port, three tries each."""
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
        pending = [self._spawn(max_startups, passwords) for _ in range(count)]
        self.instances.extend(pending)  # tracked at once, so stop() never leaks one
        started = []
        try:
            for instance in pending:
                for attempt in range(3):
                    try:
                        _wait_port(instance)
                        break
                    except RuntimeError:
                        if attempt == 2:
                            raise
                        instance = self._spawn(max_startups, passwords)
                        self.instances.append(instance)
                started.append(instance)
        except BaseException:
            self.stop()
            raise
        self.instances = [i for i in self.instances if i.process and i.process.poll() is None]
        return started

    def _spawn(self, max_startups: str, passwords: bool) -> Sshd:
        port = free_port()
        config = self.keys.root / f"sshd_{port}.conf"
        config.write_text(
            "\n".join(
                [
                    f"HostKey {self.keys.root / 'host_ed25519'}",
                    f"AuthorizedKeysFile {self.keys.root / 'authorized_keys'}",
                    f"PidFile {self.keys.root / f'sshd_{port}.pid'}",
                    "PermitRootLogin prohibit-password",
                    f"PasswordAuthentication {'yes' if passwords else 'no'}",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "UseDNS no",
                    f"MaxStartups {max_startups}",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        log = open(self.keys.root / f"sshd_{port}.log", "wb")  # noqa: SIM115 (lives with sshd)
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config), "-p", str(port), "-o", "ListenAddress=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        return Sshd(port=port, config=config, process=proc)

    def stop(self) -> None:
        for instance in self.instances:
            if instance.process is not None and instance.process.poll() is None:
                instance.process.terminate()
        for instance in self.instances:
            if instance.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    instance.process.wait(timeout=10)
                if instance.process.poll() is None:
                    instance.process.kill()
        self.instances.clear()


def _wait_port(instance: Sshd, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert instance.process is not None
        if instance.process.poll() is not None:
            raise RuntimeError(
                f"sshd on port {instance.port} exited with {instance.process.poll()}"
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", instance.port), 1),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"sshd on port {instance.port} did not start")


@contextlib.contextmanager
def login_user(name: str = "execflow-bench", password: str | None = None) -> Iterator[str]:
    """A throwaway system user whose login shell is /bin/sh, removed afterwards.

    Root's ~/.bashrc on a developer machine (pyenv init, cargo env...) runs for every SSH
    session, as bash reads it for sshd-started shells; a plain /bin/sh user measures the
    executor instead of that. The password field is ``*`` (not ``!``), which OpenSSH without
    PAM accepts for key logins."""
    created = subprocess.run(["getent", "passwd", name], capture_output=True).returncode != 0
    if created:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--shell",
                "/bin/sh",
                "--home-dir",
                "/nonexistent",
                "--no-create-home",
                name,
            ],
            check=True,
        )
        subprocess.run(["usermod", "-p", "*", name], check=True)
        if password is not None:
            subprocess.run(["chpasswd"], input=f"{name}:{password}".encode(), check=True)
    try:
        yield name
    finally:
        if created:
            _remove_user(name)


def _remove_user(name: str, wait: float = 20.0) -> None:
    """userdel once the sessions our sshd instances ran for ``name`` have ended; processes
    still owned by that throwaway uid after ``wait`` seconds are ended by pid."""
    uid = int(subprocess.run(["id", "-u", name], capture_output=True, text=True).stdout or -1)
    deadline = time.monotonic() + wait
    while subprocess.run(["userdel", name], capture_output=True).returncode == 8:  # in use
        if time.monotonic() > deadline:
            for pid in _pids_of(uid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            time.sleep(0.5)
            subprocess.run(["userdel", name], check=False)
            return
        time.sleep(0.5)


def _pids_of(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
    return pids
