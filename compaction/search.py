"""Find the smallest encoder setting whose *measured* MS-SSIM meets a target, in few encodes.

Every codec here has an integer setting 1..100 whose quality rises with it. Bisection needs about
seven encodes; this search asks an estimator (``compaction.predictor``: a fitted curve of quality
in dB, ``-10 log10(1 - MS-SSIM)``, against the setting) where the answer is, given what has been
measured so far, so it usually needs two or three encodes: one near the answer, then its
neighbour to prove the boundary. It ends, like bisection, on a pair of adjacent settings where
the lower misses and the higher meets (or at setting 1), falls back to bisecting the bracket
when the estimates stop helping, and returns only a candidate that was encoded, decoded and
measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LO, HI = 1, 100


@dataclass
class Measured:
    """One encoded candidate and the quality measured on its decoded pixels."""

    setting: int
    data: bytes
    decoded: np.ndarray
    ms_ssim: float


def db(ms_ssim: float) -> float:
    """MS-SSIM on a decibel scale, where equal steps are roughly equal encoder steps."""
    return -10 * math.log10(max(1e-10, 1.0 - ms_ssim))


@dataclass
class Result:
    best: Measured | None  # the smallest setting found that meets; None if even HI misses
    tried: dict[int, Measured]
    abandoned: bool = False  # stopped by ``give_up``: no candidate of this search can win


Estimator = Callable[[dict[int, "Measured"]], float]
GUIDED_STEPS = 4  # estimates tried before doubling steps / bisection of the bracket take over


def smallest_meeting(
    measure: Callable[[int], Measured],
    need: float,
    estimate: Estimator,
    give_up: Callable[[Measured], bool] | None = None,
) -> Result:
    """Search settings LO..HI for the smallest whose measured MS-SSIM >= ``need``.

    ``estimate(tried)``: the (fractional) setting expected to just meet ``need`` given the
    candidates measured so far. The bracket (highest known miss, lowest known meet) shrinks on
    every encode, so the search always ends, after at most GUIDED_STEPS + 14 encodes.
    ``give_up(candidate)``, asked of each candidate that misses: stop, as nothing at a higher
    setting could be of use (``auto`` renditions: it is already larger than a known winner)."""
    tried: dict[int, Measured] = {}
    miss, meet = LO - 1, HI + 1
    q = min(max(round(estimate(tried)), LO), HI)
    while True:
        tried[q] = measure(q)
        if tried[q].ms_ssim >= need:
            meet = min(meet, q)
        else:
            miss = max(miss, q)
            if give_up is not None and give_up(tried[q]):
                return Result(None, tried, abandoned=True)
        if meet - miss <= 1:
            return Result(tried.get(meet), tried)
        q = min(max(_next(tried, q, miss, meet, estimate), miss + 1), meet - 1)


def _next(tried: dict[int, Measured], q: int, miss: int, meet: int, estimate: Estimator) -> int:
    """The next setting to try: the estimate (moving at least one step inwards); after
    GUIDED_STEPS, bisection of the bracket, or doubling steps while one side is still open."""
    if len(tried) < GUIDED_STEPS:
        nxt = math.ceil(estimate(tried) - 1e-9)  # the first setting expected to meet
        return min(nxt, q - 1) if q == meet else max(nxt, q + 1)
    if miss >= LO and meet <= HI:
        return (miss + meet) // 2
    step = 2 ** (len(tried) - GUIDED_STEPS + 1)
    return meet - step if meet <= HI else miss + step


def slope_estimator(start: float, slope: float, need: float) -> Estimator:
    """The simplest estimator: a straight line of ``slope`` dB per step through the measured
    candidate closest to the target (``start`` before any is measured)."""
    target = db(need)

    def estimate(tried: dict[int, Measured]) -> float:
        if not tried:
            return start
        q = min(tried, key=lambda s: abs(db(tried[s].ms_ssim) - target))
        return q + (target - db(tried[q].ms_ssim)) / slope

    return estimate
