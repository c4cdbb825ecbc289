"""Hostile playbook files and hostile playbook parameters.

Files: alias bombs, Python tags, huge and deeply nested documents, duplicate keys, Jinja2
expressions (sandbox escapes, quote-stripping filters, gigabyte strings), templates in step
names. Each is parsed in a child process with a memory and time limit (a regression is a failed
child, not a stalled machine), and all of them together sit in the playbooks directory of a real
``execflow serve``: the valid playbook beside them is listed, none of them is.

Parameters: shell metacharacters, quoting tricks, ``$IFS``, substitutions, encoded payloads,
CR/LF/NUL and unicode lookalikes, through ``POST /api/playbooks/{id}/run`` onto a real sshd
target: each arrives as one literal argument and no marker file appears.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.settings import Settings
from tests.conftest import KeyFactory, auth
from tests.executor.conftest import PLAYBOOKS, create_server, server_body
from tests.executor.sshd import Keys, SshdFarm
from tests.hardening import playbook_child
from tests.hardening.conftest import configure_module
from tests.support.processes import serve
from tools.playbooks import load_spec, render, validate_params

CHILD_SECONDS = 20
MARKER = "/tmp/ef-yaml-marker-{token}"


def _laughs(levels: int = 9) -> str:
    lines = ['    - &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines)


def _playbook(name: str, *, command: str = "echo ok", extra: str = "") -> str:
    return f"name: {name}\n{extra}steps:\n  - name: s\n    command: {command}\n"


HOSTILE: dict[str, str] = {
    "billion-laughs": "name: bomb\nparams:\n  - name: p\n    default:\n"
    + _laughs()
    + "\nsteps:\n  - name: s\n    command: echo {{ p }}\n",
    "alias-in-steps": "name: alias\nsteps:\n  - &s {name: s, command: echo ok}\n  - *s\n",
    "python-apply": _playbook(
        "pyapply", extra="description: !!python/object/apply:os.system ['touch {marker}']\n"
    ),
    "python-name": _playbook("pyname", extra="description: !!python/name:os.system\n"),
    "python-object": _playbook("pyobj", extra="description: !!python/object:os._wrap_close {}\n"),
    "huge": _playbook("huge", extra="description: '" + "x" * 300_000 + "'\n"),
    "deep": "name: deep\nsteps: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep-mapping": "name: deepmap\ndescription: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "duplicate-key": "name: dup\nsteps:\n  - name: s\n    command: echo safe\n"
    "    command: touch {marker}\n",
    "duplicate-top": "name: dup2\nname: other\nsteps:\n  - name: s\n    command: echo ok\n",
    "list-default": "name: listdefault\nparams:\n  - name: p\n    default: [1, 2]\n"
    "steps:\n  - name: s\n    command: echo {{ p }}\n",
    "subclasses": _playbook(
        "subclasses", command="\"{{ ''.__class__.__mro__[1].__subclasses__() }}\""
    ),
    "globals": _playbook(
        "globals", command="\"{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}\""
    ),
    "lipsum": _playbook("lipsum", command="\"{{ lipsum.__globals__['os'].system('id') }}\""),
    "self": _playbook("selfref", command='"{{ self._TemplateReference__context }}"'),
    "unquote-slice": _playbook(
        "slice", extra="params:\n  - name: p\n", command='"echo {{ p[1:-1] }}"'
    ),
    "unquote-filter": _playbook(
        "filter", extra="params:\n  - name: p\n", command='"echo {{ p | replace(\\"\'\\", \'\') }}"'
    ),
    "gigabyte-string": _playbook("bigstr", command="\"echo {{ 'x' * 1000000000 }}\""),
    "range-loop": _playbook("loop", command='"{% for i in range(99999999) %}x{% endfor %}"'),
    "set-block": _playbook("setblock", command='"{% set x = 1 %}echo"'),
    "include": _playbook("include", command="\"{% include '/etc/passwd' %}\""),
    "undeclared": _playbook("undeclared", command='"echo {{ config }}"'),
    "not-a-mapping": "- just\n- a list\n",
    "not-utf8": "name: latin\ndescription: caf\xe9\nsteps: []\n",
}
VALID = (
    "name: adv-valid\nparams:\n  - name: word\n    default: hi\n"
    "steps:\n  - name: '{{ 7 * 7 }} stays literal'\n    command: echo {{ word }}\n"
)


def load_bounded(text: str) -> str:
    """'loaded', 'refused: ...' or 'crashed: ...' from a memory- and time-limited child."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.hardening.playbook_child"])
    queue = context.Queue()
    child = context.Process(target=playbook_child.load_in_child, args=(text, queue))
    child.start()
    child.join(CHILD_SECONDS)
    if child.is_alive():
        child.kill()
        child.join()
        return "crashed: timeout"
    return str(queue.get(timeout=5)) if not queue.empty() else f"crashed: exit {child.exitcode}"


@pytest.fixture
def marker() -> Iterator[Path]:
    path = Path(MARKER.format(token=uuid.uuid4().hex))
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_playbook_files_are_refused_quickly(case: str, marker: Path) -> None:
    result = load_bounded(HOSTILE[case].replace("{marker}", str(marker)))
    assert result.startswith("refused: "), result
    assert not marker.exists()


def test_positive_control_a_valid_file_loads_and_step_names_are_not_templates() -> None:
    assert load_bounded(VALID) == "loaded"
    spec = load_spec(VALID)
    [step] = render(spec, validate_params(spec, {"word": "$(id)"}))
    assert step["name"] == "{{ 7 * 7 }} stays literal" and step["command"] == "echo '$(id)'"


async def test_a_served_playbooks_dir_full_of_hostile_files_lists_only_the_valid_one(
    tmp_path: Path, settings: Settings, make_key: KeyFactory
) -> None:
    directory = tmp_path / "playbooks"
    directory.mkdir()
    for case, text in HOSTILE.items():
        (directory / f"{case}.yaml").write_bytes(text.encode("latin-1", errors="replace"))
    (directory / "valid.yaml").write_text(VALID)
    env = {
        "EXECFLOW_DATA_DIR": str(tmp_path),
        "EXECFLOW_DATABASE_URL": settings.db_url,
        "EXECFLOW_PLAYBOOKS_DIR": str(directory),
        "EXECFLOW_WEBHOOK_DISPATCHER": "false",
        "EXECFLOW_SERVER_PROBE_INTERVAL": "0",
    }
    key = await make_key("read")
    with serve(env) as base:
        response = httpx.get(f"{base}/api/playbooks", headers=auth(key), timeout=60)
    assert response.status_code == 200, response.text
    names = {p["name"] for p in response.json()["playbooks"]}
    assert "adv-valid" in names
    assert not names & {"bomb", "alias", "pyapply", "dup", "deep", "slice", "filter", "bigstr"}


# --------------------------------------------------------------------------- parameters


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return configure_module(database_url, tmp_path_factory, playbooks_dir=PLAYBOOKS)


PAYLOADS = [
    "; touch {m}",
    "&& touch {m}",
    "|| touch {m}",
    "| touch {m}",
    "& touch {m}",
    "$(touch {m})",
    "`touch {m}`",
    "${{IFS}}touch${{IFS}}{m}",
    "$IFS;touch$IFS{m}",
    "a\ntouch {m}",
    "a\rtouch {m}",
    "a\r\ntouch {m}",
    "'; touch {m}; echo '",
    '"; touch {m}; echo "',
    "'\"'\"'; touch {m}; '\"'\"'",
    "\\'; touch {m}; \\'",
    "$'\\x3b' touch {m}",
    "echo dG91Y2gge219 | base64 -d | sh",
    "$(echo dG91Y2gK | base64 -d) {m}",
    "<(touch {m})",
    ">(touch {m})",
    "> {m}",
    "{{touch,{m}}}",
    "x\u2028touch {m}",  # unicode line separator
    "x\u0085touch {m}",  # NEL
    "x\uff1b touch {m}",  # fullwidth semicolon
    "\uff04(touch {m})",  # fullwidth dollar
    "x\u037e touch {m}",  # Greek question mark (looks like ;)
    "%0atouch {m}",
    "-n; touch {m}",
    "--; touch {m}",
    "* ~ ?",
    "\x1b[2J; touch {m}",
]


async def _run_text(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    server_id: int,
    pid: int,
    params: dict[str, Any],
) -> httpx.Response:
    return await client.post(
        f"/api/playbooks/{pid}/run",
        json={"server_id": server_id, "params": params},
        headers=headers,
    )


async def _finished(
    client: httpx.AsyncClient, headers: dict[str, str], run_id: int
) -> dict[str, Any]:
    for _ in range(300):
        run = (await client.get(f"/api/playbooks/runs/{run_id}", headers=headers)).json()
        if run["status"] in {"succeeded", "failed"}:
            return dict(run)
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


@pytest.fixture(scope="module")
async def target(
    client: httpx.AsyncClient, make_key: KeyFactory, sshd_farm: SshdFarm, ssh_keys: Keys
) -> tuple[dict[str, str], int, int]:
    """(write headers, a server on a real sshd, the id of the test-touch-file playbook)."""
    key = await make_key("write")
    headers = auth(key)
    server_id = await create_server(client, key, server_body(sshd_farm, ssh_keys))
    listed = (await client.get("/api/playbooks", headers=headers)).json()["playbooks"]
    pid = next(p["id"] for p in listed if p["name"] == "test-touch-file")
    return headers, server_id, pid


async def test_hostile_parameters_arrive_literally_on_a_real_target(
    client: httpx.AsyncClient, target: tuple[dict[str, str], int, int]
) -> None:
    headers, server_id, pid = target
    workdir = Path("/tmp") / f"ef-inject-{uuid.uuid4().hex[:8]}"
    workdir.mkdir()
    failures: list[tuple[str, str, str]] = []
    refused: list[str] = []
    for payload in PAYLOADS:
        marker = workdir / f"m-{uuid.uuid4().hex[:8]}"
        text = payload.format(m=marker)
        queued = await _run_text(
            client, headers, server_id, pid, {"directory": str(workdir), "text": text}
        )
        if queued.status_code == 403:  # the deny list matched the (quoted) text: not run
            assert queued.json()["code"] == "POLICY_DENIED", payload
            refused.append(payload)
            continue
        assert queued.status_code == 202, (payload, queued.text)
        run = await _finished(client, headers, queued.json()["run_id"])
        arrived = (workdir / "out.txt").read_bytes().decode("utf-8", "surrogateescape")
        if run["status"] != "succeeded" or arrived != text or marker.exists():
            failures.append((payload, run["status"], arrived))
    nul = await _run_text(
        client, headers, server_id, pid, {"directory": str(workdir), "text": "a\x00; touch x"}
    )
    # Refused, not run: NUL is refused for every route at the request layer (api/routing.py);
    # the command policy also refuses it for tool calls that do not come over HTTP.
    assert nul.status_code == 400 and nul.json()["code"] == "VALIDATION_ERROR"
    assert failures == []
    assert len(refused) <= 2, refused  # the rest ran, and arrived as literal text
    assert sorted(p.name for p in workdir.iterdir()) == ["out.txt"]
    (workdir / "out.txt").unlink()
    workdir.rmdir()


async def test_pattern_checked_parameters_refuse_the_same_payloads(
    client: httpx.AsyncClient, target: tuple[dict[str, str], int, int]
) -> None:
    """A parameter with a pattern (``directory``) refuses them with 400 naming the field."""
    headers, server_id, pid = target
    for payload in PAYLOADS:
        directory = "/tmp/" + payload.format(m="x")
        body = {"server_id": server_id, "dry_run": True, "params": {"directory": directory}}
        response = await client.post(f"/api/playbooks/{pid}/run", json=body, headers=headers)
        assert response.status_code == 400, (payload, response.text)
        assert response.json()["fields"][0]["field"] == "params.directory", payload
    control = {"server_id": server_id, "dry_run": True, "params": {"directory": "/tmp/ok"}}
    response = await client.post(f"/api/playbooks/{pid}/run", json=control, headers=headers)
    assert response.status_code == 202 and response.json()["status"] == "validated"
