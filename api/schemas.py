"""Shared response pieces."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Ok(BaseModel):
    """Every successful body carries ``success: true``."""

    model_config = ConfigDict(from_attributes=True)

    success: Literal[True] = True
