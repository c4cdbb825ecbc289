"""The approval gate's rules: which calls change state, and what a task's autonomy allows.

``execute_command`` is read-only only when the executor's allow-list says so
(``tools.executor.is_read_only_command``); until that module is present a conservative local
allow-list stands in, treating everything but a short list of inspection commands as
state-changing. The executor's command policy (``check_command_policy``) applies to agents too.
"""

from __future__ import annotations

import importlib
import re
import shlex
from typing import Any

from models.errors import PolicyDenied

# Inspection commands allowed without approval when the executor's own list is unavailable.
_READ_ONLY_FALLBACK: dict[str, tuple[str, ...] | None] = {
    "uptime": None,
    "df": None,
    "free": None,
    "whoami": None,
    "hostname": None,
    "date": None,
    "uname": None,
    "id": None,
    "w": None,
    "who": None,
    "ps": None,
    "ls": None,
    "du": None,
    "lsblk": None,
    "vmstat": None,
    "iostat": None,
    "ss": None,
    "netstat": None,
    "journalctl": None,
    "tail": None,
    "head": None,
    "nproc": None,
    "systemctl": ("status", "is-active", "is-enabled", "list-units", "is-failed"),
    "docker": ("ps", "images", "stats", "info"),
    "ip": ("addr", "a", "route", "r", "link"),
}
_SHELL_META = re.compile(r"[;&|<>`$()\n\\]")
# Refused even with approval when the executor's policy is unavailable.
_DENY_FALLBACK = [
    re.compile(p)
    for p in (
        r"\brm\s+-[a-z]*r[a-z]*f?\s+/(\s|$)",
        r"\brm\s+-[a-z]*f[a-z]*r\s+/(\s|$)",
        r"\bmkfs(\.\w+)?\b",
        r"\bdd\s+if=",
        r":\(\)\s*\{",
        r"\b(curl|wget)\b[^|]*\|\s*(ba|z|da)?sh\b",
        r">\s*/dev/sd[a-z]",
    )
]


def fallback_is_read_only(command: str) -> bool:
    """The stand-in allow-list: one known inspection command, no shell metacharacters."""
    if not command.strip() or _SHELL_META.search(command):
        return False
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    sub = _READ_ONLY_FALLBACK.get(words[0], ())
    if sub is None:
        return True
    if not sub:
        return False
    return len(words) > 1 and words[1] in sub


def _executor() -> Any:
    """tools.executor when it is installed in this build, else None."""
    try:
        return importlib.import_module("tools.executor")
    except ImportError:
        return None


def is_read_only_command(command: str) -> bool:
    """The executor's read-only allow-list, or the conservative fallback without it."""
    fn = getattr(_executor(), "is_read_only_command", None)
    if fn is None:
        return fallback_is_read_only(command)
    return bool(fn(command))


def check_command_policy(command: str) -> None:
    """Raise PolicyDenied for commands the executor refuses (agents obey the same policy)."""
    fn = getattr(_executor(), "check_command_policy", None)
    if fn is not None:
        fn(command)
        return
    for pattern in _DENY_FALLBACK:
        if pattern.search(command):
            raise PolicyDenied("command refused by the command policy", code="COMMAND_DENIED")


def autonomy_decision(autonomy: dict[str, Any] | None, tool: str) -> str:
    """What the task's autonomy policy says about a state-changing call: ask, run or deny.

    - ``require_approval`` (default): every state-changing call waits for a decision.
    - ``dry_run_only``: state-changing calls are refused outright (read-only and dry runs only).
    - ``autonomous``: the named ``tools`` run without approval; any other waits for one.
    """
    policy = autonomy or {}
    mode = policy.get("mode", "require_approval")
    if mode == "dry_run_only":
        return "deny"
    if mode == "autonomous" and tool in set(policy.get("tools") or []):
        return "run"
    return "ask"
