"""Command policy: a deny list refused outright, and the read-only allow-list agents rely on.

The deny list is a backstop against the obvious catastrophes (it is not a sandbox: a determined
operator with write scope can always write a script). The read-only allow-list is deliberately
strict: a command is read-only only if every part of every pipeline is a known reader with no
writing flag, and there is no redirection, substitution or command chaining at all.
"""

from __future__ import annotations

import posixpath
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
    (
        r"\b(base64|base32|xxd|openssl)\b[^;&]*\|\s*(sudo\s+)?(ba|da|z|k)?sh\b",
        "piping decoded text into a shell",
    ),
    (
        r"\b(eval|(ba|da|z|k)?sh\s+-c)\s+[\"']?\$\([^)]*\b(base64|base32|xxd|openssl)\b",
        "running decoded text",
    ),
)
_ROOTS = {"/", "/*", "~", "~/", "$HOME", "${HOME}", "$HOME/", "${HOME}/"}
_SIMPLE_COMMANDS = re.compile(r"[;&|\n\r]+")
_IFS = re.compile(r"\$\{IFS\}|\$IFS\b")

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
}
# Arguments (substrings) that make a reader write, execute or change something.
_FORBIDDEN_FLAGS = {
    "journalctl": (
        "--vacuum",
        "--rotate",
        "--flush",
        "--sync",
        "--relinquish",
        "--setup-keys",
        "--update-catalog",
    ),
    "find": ("-delete", "-exec", "-execdir", "-ok", "-okdir", "-fprint", "-fls", "-fprintf"),
    # system(), redirection, pipes, gawk's @load/@include and indirect calls, in-place editing
    "awk": ("system", ">", "|", "@", "getline", "inplace", "--include", "--load", "--file"),
    "date": ("--set",),
    "sort": ("--output", "--compress-program"),
    "dmesg": ("--clear", "--read-clear", "--console-level", "--console-off", "--console-on"),
    "ss": ("--kill", "--diag"),
    "file": ("--compile",),
    "apt": ("--option", "--config-file"),
    "dpkg": ("--force", "--admindir", "--root", "--instdir"),
}
# Letters no short-option cluster may contain (``sort -uo FILE`` writes like ``sort -o FILE``).
_FORBIDDEN_SHORT = {
    "date": "s",
    "sort": "o",
    "dmesg": "cCnDE",
    "ss": "KD",
    "file": "C",
    "sar": "o",
    "awk": "ifEl",
    "apt": "oc",
    "dpkg": "iPrRaCVxXbeAp",  # a second action (-l is the first) or an installing option
}
# At most this many operands: ``uniq IN OUT`` writes OUT, ``ifconfig lo down`` reconfigures.
_MAX_OPERANDS = {"uniq": 1, "ifconfig": 1}
_NO_ARGUMENTS = {"hostname", "env"}  # ``env CMD`` runs CMD; ``hostname NAME`` renames the host
# Commands that only look at paths (never open them): device files are fine to name.
_PATH_LOOKERS = {"ls", "stat", "df", "du", "lsblk", "lsof", "find", "which", "test"}
# Opening some device files acts (a watchdog arms, a tape rewinds on close).
_DEVICE_PATH = re.compile(r"(^|/)dev(/|$)")
_IP_OPTIONS = {
    "-br",
    "-brief",
    "-s",
    "-stats",
    "-statistics",
    "-4",
    "-6",
    "-d",
    "-details",
    "-c",
    "-color",
    "-j",
    "-json",
    "-p",
    "-pretty",
    "-o",
    "-oneline",
    "-h",
    "-human",
}
_IP_OBJECTS = {"addr", "address", "a", "route", "r", "link", "l", "neigh", "n", "neighbour", "rule"}
_IP_VERBS = {"show", "list", "ls", "lst", "sh", "get"}  # ``ip r a`` is ``ip route add``
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
        if rule.search(command) or rule.search(_IFS.sub(" ", command)):
            raise PolicyDenied(f"command refused by policy: {why}")
    if _removes_a_root(command):
        raise PolicyDenied("command refused by policy: recursive removal of / or a home directory")


def _removes_a_root(command: str) -> bool:
    """``rm`` with a recursive flag on /, ~ or $HOME, however quoted, spaced or spelled
    (``--recursive``, ``"/"``, ``/.``, ``//``, ``${IFS}``, ``r\\m``, ``/bin/rm``)."""
    for simple in _SIMPLE_COMMANDS.split(_IFS.sub(" ", command)):
        try:
            words = shlex.split(simple)
        except ValueError:
            continue
        while words and words[0] in ("sudo", "env", "command", "exec", "nice", "nohup"):
            words = words[1:]
        if not words or words[0].rsplit("/", 1)[-1] != "rm":
            continue
        flags = [w for w in words[1:] if w.startswith("-")]
        recursive = any(
            f in ("--recursive", "-r", "-R") or (not f.startswith("--") and set(f) & {"r", "R"})
            for f in flags
        )
        targets = {_normalised(w) for w in words[1:] if not w.startswith("-")}
        if recursive and targets & _ROOTS:
            return True
    return False


def _normalised(path: str) -> str:
    if path.startswith("/"):
        collapsed = posixpath.normpath("/" + path.lstrip("/"))
        return "/*" if collapsed == "/*" else collapsed
    return path


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
    name, args = words[0], words[1:]
    if name == "sudo" or "/" in name or name not in READ_ONLY_COMMANDS:
        return False
    if name == "top" and "-b" not in args:
        return False  # interactive top never ends
    if name == "ip":
        return _ip_is_read_only(args)
    if name in _SUBCOMMANDS and not _subcommand_is_read_only(name, args):
        return False
    return _arguments_are_read_only(name, args)


def _subcommand_is_read_only(name: str, args: list[str]) -> bool:
    first = next((a for a in args if not a.startswith("--") or name == "service"), None)
    if first is None:
        return name == "systemctl"  # bare "systemctl" only lists units
    return first in _SUBCOMMANDS[name]


def _arguments_are_read_only(name: str, args: list[str]) -> bool:
    if name in _NO_ARGUMENTS and args:
        return False
    if any(f in arg for arg in args for f in _FORBIDDEN_FLAGS.get(name, ())):
        return False
    letters = _FORBIDDEN_SHORT.get(name, "")
    clusters = [a[1:] for a in args if a.startswith("-") and not a.startswith("--")]
    if any(ch in letters for cluster in clusters for ch in cluster):
        return False
    operands = [a for a in args if not a.startswith("-")]
    if len(operands) > _MAX_OPERANDS.get(name, len(operands)):
        return False
    return name in _PATH_LOOKERS or not any(_DEVICE_PATH.search(a) for a in args)


def _ip_is_read_only(args: list[str]) -> bool:
    """``ip [read-only options] [OBJECT [show|list|get ...]]``; nothing else (no -batch, no
    netns exec, no abbreviated add/del/set/flush)."""
    rest = list(args)
    while rest and rest[0].startswith("-"):
        if rest.pop(0) not in _IP_OPTIONS:
            return False
    if not rest:
        return True
    if rest.pop(0) not in _IP_OBJECTS:
        return False
    return not rest or rest[0] in _IP_VERBS or rest[0] == "dev"
