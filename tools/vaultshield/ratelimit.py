"""Per-proxy rate-limit buckets (GCRA: a token bucket kept as one theoretical arrival time)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}


def parse_threshold(text: str) -> tuple[int, float]:
    """``60/min`` -> (60, 60.0); ValueError on anything else."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*/\s*([a-z]+?)s?\s*", text.lower())
    if not match or match.group(2) not in _UNITS or int(match.group(1)) < 1:
        raise ValueError(f"threshold {text!r} is not N/unit (unit: sec, min, hour, day)")
    return int(match.group(1)), _UNITS[match.group(2)]


class RateLimiter:
    """``limit`` requests per ``period`` with bursts up to ``limit``, per bucket key."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 200_000):
        self._tat: dict[str, float] = {}
        self._clock = clock
        self._max_keys = max_keys

    def hit(self, key: str, limit: int, period: float) -> float:
        """Charge one request: 0 when admitted, else seconds until one would be."""
        now = self._clock()
        interval = period / limit
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + interval
        if new_tat - now > period + 1e-9:
            return new_tat - now - period
        if len(self._tat) >= self._max_keys:
            self._prune(now)
        self._tat[key] = new_tat
        return 0.0

    def _prune(self, now: float) -> None:
        self._tat = {k: v for k, v in self._tat.items() if v > now}
