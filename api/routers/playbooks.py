"""Playbooks: list, inspect, run (queued, or a dry run that returns the plan), follow a run."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CurrentKey, RequestId, SessionDep
from api.routing import make_router
from api.schemas import MAX_ID, Ok, id_path
from tools import playbooks

router = make_router(tags=["playbooks"])


class PlaybookRead(BaseModel):
    id: int
    name: str
    description: str
    server_specific: bool
    step_count: int
    params: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    last_execution: dict[str, Any] | None = Field(
        description="time, server_id, status and duration_ms of the latest run"
    )


class PlaybookList(Ok):
    playbooks: list[PlaybookRead]


class PlaybookOne(Ok):
    playbook: PlaybookRead


class PlaybookRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="Required if server-specific"
    )
    dry_run: bool = Field(default=False, description="Validate and render without executing")
    params: dict[str, Any] = Field(default_factory=dict, description="Playbook parameters")


class PlaybookRunAccepted(Ok):
    playbook_id: int
    playbook: str
    server_id: int | None
    params: dict[str, Any]
    dry_run: bool
    status: str
    plan: list[dict[str, Any]]
    run_id: int | None = None
    job_id: int | None = None


class PlaybookRunRead(Ok):
    run_id: int
    playbook_id: int
    server_id: int | None
    status: str
    params: dict[str, Any]
    steps: list[dict[str, Any]]
    error: str | None
    job_id: int | None
    duration_ms: int | None
    created_at: str
    started_at: str | None
    finished_at: str | None


@router.get("/playbooks", response_model=PlaybookList)
async def list_playbooks(session: SessionDep) -> PlaybookList:
    """All playbooks with their step counts and last execution."""
    return PlaybookList(**await playbooks.list_playbooks(session))


@router.get("/playbooks/runs/{run_id}", response_model=PlaybookRunRead)
async def get_playbook_run(session: SessionDep, run_id: int = id_path()) -> PlaybookRunRead:
    """A run's status and per-step results (including rollbacks)."""
    return PlaybookRunRead(**await playbooks.get_run(session, run_id=run_id))


@router.get("/playbooks/{playbook_id}", response_model=PlaybookOne)
async def get_playbook(session: SessionDep, playbook_id: int = id_path()) -> PlaybookOne:
    """One playbook with its parameter schema and steps."""
    view = await playbooks.get_playbook(session, playbook=playbook_id)
    return PlaybookOne(playbook=PlaybookRead(**view))


@router.post("/playbooks/{playbook_id}/run", response_model=PlaybookRunAccepted, status_code=202)
async def run_playbook(
    body: PlaybookRunRequest,
    session: SessionDep,
    key: CurrentKey,
    request_id: RequestId,
    playbook_id: int = id_path(),
) -> PlaybookRunAccepted:
    """Run a playbook (queued; follow it at /playbooks/runs/{run_id}) or dry-run it."""
    result = await playbooks.run_playbook(
        session,
        playbook=playbook_id,
        server_id=body.server_id,
        dry_run=body.dry_run,
        params=body.params,
        actor=key.actor,
        request_id=request_id,
    )
    return PlaybookRunAccepted(**result)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Register the playbook files at start-up (invalid ones are logged and skipped)."""
    await playbooks.sync_playbooks(force=True)
    yield
