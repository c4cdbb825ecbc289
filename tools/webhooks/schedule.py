"""When to try again: an increasing schedule with jitter, never sooner than ``Retry-After``."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_SECONDS = 86_400.0


@dataclass(frozen=True)
class RetrySchedule:
    """``delays[i]`` seconds before retry i+1; after the last one the delivery has failed."""

    delays: Sequence[float]
    jitter: float = 0.2

    def delay_after(
        self, attempts: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait after ``attempts`` failed attempts; None when retries are exhausted."""
        if attempts < 1 or attempts > len(self.delays):
            return None
        base = float(self.delays[attempts - 1])
        spread = base * self.jitter
        delay = base + (rng or random).uniform(-spread, spread) if spread else base
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_SECONDS))
        return max(0.0, delay)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.delays))


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """``Retry-After`` as seconds from ``now`` (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())
