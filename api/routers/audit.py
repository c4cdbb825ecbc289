"""The audit trail: a verifiable Merkle transparency log (entries, proofs, checkpoints, export).

Fixed paths (``checkpoint``, ``consistency``, ``export``) are declared before ``{seq}`` so the
path parameter does not capture them. While the API runs, ``lifespan`` signs a checkpoint every
``EXECFLOW_LEDGER_CHECKPOINT_INTERVAL`` seconds when the log has grown.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Path, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.background import periodically
from api.deps import SessionDep
from api.routing import make_router
from api.schemas import MAX_ID, Ok
from models.ledger.checkpoints import export_lines, make_checkpoint
from tools import audit

router = make_router(tags=["audit"])
log = logging.getLogger("execflow.ledger")


class CheckpointRead(BaseModel):
    checkpoint: str = Field(description="C2SP tlog-checkpoint signed note")
    tree_size: int
    root_hash: str = Field(description="hex SHA-256 RFC 9162 root")
    public_key: str = Field(description="base64 Ed25519 public key")
    verifier_key: str = Field(description="note verifier key: <name>+<key id>+<base64 key>")
    origin: str
    created_at: str


class AuditLogPage(Ok):
    entries: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
    checkpoint: CheckpointRead


class CheckpointResponse(Ok, CheckpointRead):
    pass


class ConsistencyRead(Ok):
    from_size: int
    to_size: int
    from_root: str
    to_root: str
    consistency_proof: list[str]


class EntryProofRead(Ok):
    entry: dict[str, Any]
    leaf_hash: str = Field(description="SHA-256(0x00 || RFC 8785 JSON of entry)")
    tree_size: int
    root_hash: str
    inclusion_proof: list[str]


@router.get("/audit-log", response_model=AuditLogPage)
async def list_audit_log(
    session: SessionDep,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=MAX_ID),
    action: str | None = Query(None, max_length=64),
    server_id: int | None = Query(None, ge=1, le=MAX_ID),
    from_: str | None = Query(None, alias="from", description="ISO 8601 start"),
    to: str | None = Query(None, description="ISO 8601 end"),
) -> dict[str, Any]:
    """Entries, newest first, with the latest signed checkpoint."""
    page = await audit.query_audit_log(
        session,
        action=action,
        server_id=server_id,
        from_=from_,
        to=to,
        limit=limit,
        offset=offset,
    )
    return {"success": True, **page}


@router.get("/audit-log/checkpoint", response_model=CheckpointResponse)
async def get_checkpoint(session: SessionDep) -> dict[str, Any]:
    """A signed checkpoint of the log as it is now, and the key that verifies it."""
    return {"success": True, **await audit.current_checkpoint(session)}


@router.get("/audit-log/consistency", response_model=ConsistencyRead)
async def get_consistency(
    session: SessionDep,
    from_size: int | None = Query(
        None, ge=0, le=MAX_ID, description="default: the size of the latest signed checkpoint"
    ),
    to_size: int | None = Query(None, ge=0, le=MAX_ID, description="default: the current size"),
) -> dict[str, Any]:
    """An RFC 9162 consistency proof between two tree sizes."""
    proof = await audit.get_consistency(session, from_size=from_size, to_size=to_size)
    return {"success": True, **proof}


@router.get(
    "/audit-log/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/jsonl": {}}}},
)
async def export_audit_log() -> StreamingResponse:
    """The whole log as JSON Lines plus its checkpoints, for ``execflow audit verify --export``."""
    checkpoint = await make_checkpoint()
    return StreamingResponse(
        export_lines(checkpoint),
        media_type="application/jsonl",
        headers={"Content-Disposition": 'attachment; filename="audit-log.jsonl"'},
    )


@router.get("/audit-log/{seq}", response_model=EntryProofRead)
async def get_entry(
    session: SessionDep,
    seq: int = Path(ge=0, le=MAX_ID),
    tree_size: int | None = Query(None, ge=1, le=MAX_ID, description="default: the current size"),
) -> dict[str, Any]:
    """One entry with its leaf hash and inclusion proof."""
    return {
        "success": True,
        **await audit.get_entry_with_proof(session, seq=seq, tree_size=tree_size),
    }


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Sign checkpoints at a fixed interval while the API runs."""
    interval = app.state.settings.ledger_checkpoint_interval
    if interval <= 0:
        yield
        return
    async with periodically(make_checkpoint, interval, what="ledger checkpoint"):
        yield
