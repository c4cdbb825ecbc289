"""Shared response pieces."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

# Row ids are INTEGER primary keys: int4 on PostgreSQL, 64-bit on SQLite. A larger path id can
# name no row, and passing it to the driver fails (asyncpg: out of int32 range; sqlite3:
# OverflowError) as a 500, so every id path parameter is bounded here: beyond it is a 400.
MAX_ID = 2**31 - 1


# The same bound for ids inside request bodies (e.g. ``server_ids: list[RowId]``).
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]


def id_path(description: str | None = None) -> Any:
    """``Path(ge=1, le=MAX_ID)``: the declaration for every ``/{something_id}`` parameter."""
    return Path(ge=1, le=MAX_ID, description=description)


class Ok(BaseModel):
    """Every successful body carries ``success: true``."""

    model_config = ConfigDict(from_attributes=True)

    success: Literal[True] = True
