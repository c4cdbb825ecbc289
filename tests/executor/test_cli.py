"""``execflow servers`` / ``execflow playbooks`` in fresh interpreters (SQLite file database)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.processes import ROOT, execflow_env, run_cli


def test_cli_exec_streams_and_exits_with_the_command_code(tmp_path: Path) -> None:
    env = {"EXECFLOW_DATA_DIR": str(tmp_path)}
    assert run_cli("db", "upgrade", env=env).returncode == 0
    seed = (
        "import asyncio\n"
        "from models.settings import get_settings\n"
        "from models.db import init_database\n"
        "from tools.servers import create_server\n"
        "async def m():\n"
        "    db = init_database(get_settings().db_url)\n"
        "    async with db.session() as s:\n"
        "        await create_server(s, name='here', host='localhost', transport='local',"
        " actor='test')\n"
        "    await db.dispose()\n"
        "asyncio.run(m())\n"
    )
    subprocess.run([sys.executable, "-c", seed], env=execflow_env(env), cwd=ROOT, check=True)
    listing = run_cli("servers", "list", env=env)
    assert "here" in listing.stdout and "local" in listing.stdout
    out = run_cli("servers", "exec", "1", "echo a; echo b >&2; exit 4", env=env)
    assert out.returncode == 4 and out.stdout == "a\n" and "b" in out.stderr
    denied = run_cli("servers", "exec", "1", "shutdown -h now", env=env)
    assert denied.returncode == 1 and "POLICY_DENIED" in denied.stderr
    plan = run_cli(
        "playbooks",
        "run",
        "restart-service",
        "--server",
        "1",
        "--param",
        "service=cron",
        "--dry-run",
        env=env,
    )
    assert plan.returncode == 0 and "systemctl restart -- cron" in plan.stdout
    assert "restart-service" in run_cli("playbooks", "list", env=env).stdout
