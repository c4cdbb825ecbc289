"""Imported by Celery workers in tests (EXECFLOW_JOB_MODULES): agent tool calls go to a file.

EF_AGENT_CALL_LOG names the file; EF_AGENT_BLOCK_ON=N makes the N-th call hang, so the test can
kill the worker while that side effect is in flight.
"""

from __future__ import annotations

import os

import orchestrator.tasks as task_service
from tests.agents.worker_child import FileBackend

task_service.backend_override = FileBackend(
    os.environ["EF_AGENT_CALL_LOG"], int(os.environ.get("EF_AGENT_BLOCK_ON", "0"))
)
