"""Command policy: a deny list refused outright, and the read-only allow-list agents rely on.

The deny list is a backstop against the obvious catastrophes (it is not a sandbox: a determined
operator with write scope can always write a script). The read-only allow-list is deliberately
strict: a command is read-only only if every part of every pipeline is a known reader with no
writing flag, and there is no redirection, substitution or command chaining at all.
"""

from __future__ import annotations

import re
import shlex

from models.errors import PolicyDenied
from models.settings import get_settings

DEFAULT_DENY: tuple[tuple[str, str], ...] = (
    (
        r"\brm\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*[rR][a-zA-Z]*\s+(-[a-zA-Z-]+\s+)*(/|/\*|~|\$HOME)(\s|$|;|&|\|)",
        "recursive removal of / or a home directory",
    ),
    (r"--no-preserve-root", "rm --no-preserve-root"),
    (r"\bmkfs(\.\w+)?\b", "making a filesystem"),
    (r"\bdd\b[^|;&]*\bof=/dev/(sd|nvme|hd|vd|xvd|mmcblk|disk)", "dd onto a block device"),
    (r">\s*/dev/(sd|nvme|hd|vd|xvd|mmcblk)", "writing to a block device"),
    (r":\s*\(\s*\)\s*\{.*:\s*\|\s*:.*\}", "fork bomb"),
    (r"\b(shutdown|poweroff|halt|reboot)\b", "shutting the machine down"),
    (
        r"\binit\s+[06]\b|\btelinit\s+[06]\b|\bsystemctl\s+(poweroff|reboot|halt|kexec)\b",
        "shutting the machine down",
    ),
    (
        r"\b(curl|wget|fetch)\b[^|;&]*\|\s*(sudo\s+)?(ba|da|z|k)?sh\b",
        "piping a download into a shell",
    ),
    (
        r"\b(sh|bash|zsh)\s+(-c\s+)?[\"']?\$\((curl|wget)\b|\b(sh|bash)\s+<\s*\(\s*(curl|wget)\b",
        "running a downloaded script",
    ),
    (r"\bchmod\s+(-R\s+)?[0-7]*777\s+/(\s|$)", "making / world-writable"),
    (r"\bchown\s+-R\b[^;&|]*\s/(\s|$)", "changing ownership of /"),
    (r"\bcrontab\s+-r\b", "deleting every cron job"),
    (r">\s*/etc/(passwd|shadow|sudoers)\b", "overwriting account databases"),
)

READ_ONLY_COMMANDS = frozenset(
    {
        "uptime",
        "df",
        "du",
        "ps",
        "uname",
        "hostname",
        "whoami",
        "id",
        "date",
        "free",
        "top",
        "cat",
        "head",
        "tail",
        "less",
        "grep",
        "egrep",
        "zgrep",
        "wc",
        "ls",
        "stat",
        "file",
        "which",
        "w",
        "who",
        "last",
        "lsblk",
        "lscpu",
        "lsof",
        "ss",
        "netstat",
        "ip",
        "ifconfig",
        "ping",
        "dig",
        "nslookup",
        "host",
        "journalctl",
        "systemctl",
        "service",
        "dmesg",
        "env",
        "printenv",
        "echo",
        "true",
        "vmstat",
        "iostat",
        "mpstat",
        "sar",
        "nproc",
        "pgrep",
        "sort",
        "uniq",
        "cut",
        "awk",
        "tr",
        "docker",
        "kubectl",
        "apt",
        "dpkg",
        "getent",
        "sha256sum",
        "md5sum",
        "find",
        "pwd",
        "test",
        "arch",
    }
)
_SUBCOMMANDS = {
    "systemctl": {
        "status",
        "is-active",
        "is-enabled",
        "is-failed",
        "list-units",
        "list-unit-files",
        "list-timers",
        "show",
        "cat",
    },
    "service": {"--status-all"},
    "docker": {"ps", "images", "logs", "inspect", "stats", "info", "version", "top"},
    "kubectl": {"get", "describe", "logs", "top", "version", "explain"},
    "apt": {"list", "show", "policy", "search"},
    "dpkg": {"-l", "-L", "-s", "--list", "--status", "--listfiles", "-S", "--search"},
    "ip": {"addr", "a", "route", "r", "link", "l", "neigh", "-br", "-s", "-4", "-6"},
}
_FORBIDDEN_FLAGS = {
    "journalctl": ("--vacuum", "--rotate", "--flush", "--sync", "--relinquish", "--setup-keys"),
    "find": ("-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fls", "-fprintf"),
    "awk": ("system", ">", "|"),
    "date": ("-s", "--set"),
    "hostname": (),
    "sort": ("-o", "--output"),
    "top": (),
}
# chaining, redirection and substitution make any command a potential writer
_UNSAFE = re.compile(r"[;&><`\n\r]|\$\(|\$\{|\|\|")


def _deny_rules() -> list[tuple[re.Pattern[str], str]]:
    rules = [(re.compile(p, re.IGNORECASE | re.DOTALL), why) for p, why in DEFAULT_DENY]
    for pattern in get_settings().command_deny_patterns:
        rules.append((re.compile(pattern, re.IGNORECASE | re.DOTALL), f"matches {pattern!r}"))
    return rules


def check_command_policy(command: str) -> None:
    """Raise PolicyDenied (403 POLICY_DENIED) if ``command`` matches the deny list."""
    if not command.strip():
        raise PolicyDenied("empty command")
    if "\x00" in command:
        raise PolicyDenied("command contains a NUL byte")
    for rule, why in _deny_rules():
        if rule.search(command):
            raise PolicyDenied(f"command refused by policy: {why}")


def is_read_only_command(command: str) -> bool:
    """True only if every stage of the pipeline is an allow-listed reader used read-only."""
    if not command.strip() or _UNSAFE.search(command):
        return False
    try:
        check_command_policy(command)
    except PolicyDenied:
        return False
    for stage in command.split("|"):
        try:
            words = shlex.split(stage)
        except ValueError:
            return False
        if not words or not _stage_is_read_only(words):
            return False
    return True


def _stage_is_read_only(words: list[str]) -> bool:
    name = words[0]
    if name == "sudo" or "/" in name or name not in READ_ONLY_COMMANDS:
        return False
    args = words[1:]
    if name == "hostname" and args:
        return False
    if name == "top" and "-b" not in args:
        return False  # interactive top never ends
    if name in _SUBCOMMANDS:
        first = next((a for a in args if not a.startswith("--") or name == "service"), None)
        if first is None and name in {"systemctl", "ip", "docker", "kubectl"}:
            return name in {"systemctl", "ip"}  # bare "systemctl"/"ip" only list
        if first not in _SUBCOMMANDS[name]:
            return False
    if name == "ip" and any(
        a in {"add", "del", "delete", "set", "flush", "change", "replace"} for a in args
    ):
        return False
    forbidden = _FORBIDDEN_FLAGS.get(name, ())
    return not any(f in arg for arg in args for f in forbidden)
