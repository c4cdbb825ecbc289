"""Per-key rate limits as GCRA (a token bucket expressed as a theoretical arrival time).

A plan of ``rate`` requests per minute with bursts up to ``burst`` is a bucket that holds
``burst`` tokens and refills at ``rate / 60`` per second: a full bucket admits ``burst`` requests
at once, then one every ``60 / rate`` seconds. The state per key is one number, the TAT.

In-process by default; with Redis the same arithmetic runs as one Lua script, using Redis's
clock, so every API replica shares each key's bucket exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int  # bucket capacity (the burst), so Remaining <= Limit always holds
    remaining: int
    reset_at: float  # epoch seconds when the bucket is full again
    retry_after: float  # seconds until one more request would be admitted (0 when allowed)
    rate_per_minute: int

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
            "X-RateLimit-Policy": f"{self.rate_per_minute};w=60;burst={self.limit}",
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


def gcra(tat: float, now: float, rate_per_minute: int, burst: int) -> tuple[float, Decision]:
    """One GCRA step: (new TAT, decision). Pure, so both backends share its meaning."""
    interval = 60.0 / rate_per_minute
    capacity = burst * interval
    tat = max(tat, now)
    new_tat = tat + interval
    if new_tat - now > capacity + 1e-9:
        retry = new_tat - now - capacity
        remaining = 0
        return tat, Decision(False, burst, remaining, tat, retry, rate_per_minute)
    remaining = int((capacity - (new_tat - now)) / interval + 1e-9)
    return new_tat, Decision(True, burst, remaining, new_tat, 0.0, rate_per_minute)


class MemoryLimiter:
    """GCRA state in this process's memory (the embedded default)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._tat: dict[str, float] = {}
        self._clock = clock

    async def hit(self, key: str, rate_per_minute: int, burst: int) -> Decision:
        # No await between read and write: atomic within the event loop.
        new_tat, decision = gcra(self._tat.get(key, 0.0), self._clock(), rate_per_minute, burst)
        self._tat[key] = new_tat
        return decision

    async def close(self) -> None:
        return None


# KEYS[1] = bucket key; ARGV = rate per minute, burst. Returns {allowed, tat_us, now_us}.
_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = math.floor(60000000 / tonumber(ARGV[1]))
local capacity = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > capacity then
  return {0, tat, now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, new_tat, now}
"""


class RedisLimiter:
    """GCRA state in Redis, one atomic script per request, Redis's clock for every replica."""

    def __init__(self, url: str, prefix: str = "ef") -> None:
        import redis.asyncio as redis

        self._redis: Any = redis.from_url(url)
        self._prefix = prefix
        self._script = self._redis.register_script(_LUA)

    async def hit(self, key: str, rate_per_minute: int, burst: int) -> Decision:
        allowed, tat_us, now_us = await self._script(
            keys=[f"{self._prefix}:rl:{key}"], args=[rate_per_minute, burst]
        )
        interval = 60.0 / rate_per_minute
        capacity = burst * interval
        tat, now = tat_us / 1e6, now_us / 1e6
        if not allowed:
            retry = tat + interval - now - capacity
            return Decision(False, burst, 0, tat, retry, rate_per_minute)
        remaining = int((capacity - (tat - now)) / interval + 1e-6)
        return Decision(True, burst, remaining, tat, 0.0, rate_per_minute)

    async def close(self) -> None:
        await self._redis.aclose()


def unlimited(rate_per_minute: int) -> Decision:
    """The decision for an enterprise key with no burst cap: always admitted."""
    return Decision(True, rate_per_minute, rate_per_minute, time.time(), 0.0, rate_per_minute)
