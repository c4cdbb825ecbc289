"""The shipped ``deploy/nginx.conf`` run by Debian's nginx in front of loopback replicas."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.processes import ROOT, stop_process, wait_http

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
MISSING = "nginx is not installed; `scripts/setup --dev` installs Debian's nginx for this test"
SHIPPED = ROOT / "deploy" / "nginx.conf"


def nginx_config(listen_port: int, replica_ports: list[int]) -> str:
    """The shipped file with only its site-specific lines (upstreams, listen) replaced."""
    text = SHIPPED.read_text()
    servers = "".join(
        f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n" for p in replica_ports
    )
    text, n = re.subn(
        r"(upstream execflow_api \{[^\n]*\n)(?:\s*server [^\n]*\n)+", r"\1" + servers, text
    )
    assert n == 1, "upstream block not found in deploy/nginx.conf"
    text, n = re.subn(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{listen_port};", text)
    assert n == 1, "listen line not found in deploy/nginx.conf"
    return text


@contextmanager
def run_nginx(prefix: Path, config: str) -> Iterator[str]:
    """Start nginx with ``config`` (its paths relative to ``prefix``); yield its base URL."""
    assert NGINX is not None, MISSING
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    port = re.search(r"listen 127\.0\.0\.1:(\d+);", config)
    assert port is not None
    glob = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    cmd = [NGINX, "-p", str(prefix), "-e", "logs/error.log", "-c", str(conf), "-g", glob]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port.group(1)}"
    try:
        wait_http(base + "/healthz")
        yield base
    finally:
        stop_process(proc)
