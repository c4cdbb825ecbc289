"""The child side of the hostile-playbook test: load and render one file under a memory cap.

A module of its own, importing only the playbook loader, so the test's children are forked from
a clean ``forkserver`` that preloads it rather than from a pytest worker whose other threads
(torch, numba, event loops) may hold a lock at the moment of the fork.
"""

from __future__ import annotations

import resource
from typing import Any

from tools.playbooks import load_spec, render, validate_params

CHILD_MEMORY = 512 * 1024 * 1024


def load_in_child(text: str, queue: Any) -> None:
    """Put 'loaded', 'refused: <why>' or 'crashed: <exception>' on ``queue``."""
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))
    try:
        spec = load_spec(text)
        render(spec, validate_params(spec, {}))
        queue.put("loaded")
    except ValueError as exc:
        queue.put(f"refused: {exc}"[:300])
    except BaseException as exc:
        queue.put(f"crashed: {type(exc).__name__}")
