"""Start real ExecFlow processes (``execflow serve``) on loopback ports for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str,
    timeout: float = 30.0,
    *,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """Wait until ``url`` answers without a 5xx. With ``proc``: fail at once if it exits; the
    tail of ``log`` goes into either failure's message."""

    def tail() -> str:
        return "\n" + log.read_text(errors="replace")[-3000:] if log is not None else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited with {proc.returncode}{tail()}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s{tail()}")


def wait_started(proc: subprocess.Popen, url: str, log: Path, *, timeout: float = 120.0) -> None:
    """``wait_http`` for a server process just started. Generous: on the shared 2-core machine
    an ExecFlow process has taken over 30 s to start under load."""
    wait_http(url, timeout, proc=proc, log=log)


def json_log_records(path: Path) -> list[dict]:
    """The JSON records of an ExecFlow log (``EXECFLOW_LOG_FORMAT=json``); other lines skipped."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def execflow_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECFLOW_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``execflow ARGS`` in a fresh interpreter and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=execflow_env(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def serve(env: Mapping[str, str], *args: str, port: int | None = None) -> Iterator[str]:
    """Run ``execflow serve`` in a subprocess; yield its base URL; stop it afterwards."""
    port = port or free_port()
    log = open(Path(env.get("EXECFLOW_DATA_DIR", ".")) / f"serve-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "api.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        env=execflow_env(env),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_started(proc, base + "/healthz", Path(log.name))
        yield base
    finally:
        stop_process(proc)
        log.close()


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


class Proc:
    """An ``execflow`` subprocess with its log in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            env=execflow_env(env),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited early:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not in log within {timeout}s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.popen, timeout=15)
        self._log.close()
