"""Find the smallest encoder setting whose *measured* MS-SSIM meets a target, in few encodes.

Every codec here has an integer setting 1..100 whose quality rises with it. Bisection needs about
seven encodes; this search starts where a fitted predictor (``compaction.predictor``) expects the
answer and steps by the measured local slope of quality in dB (``-10 log10(1 - MS-SSIM)``), so
it usually needs two or three: one near the answer, then its neighbour to prove the boundary.
It ends, like bisection, on a pair of adjacent settings where the lower misses and the higher
meets (or at setting 1), and it returns only a candidate that was encoded, decoded and measured.
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


def _slope(tried: dict[int, Measured], q: int, prior: float) -> float:
    """dB per setting step near ``q``: the secant through the nearest other measured setting,
    kept within a factor of 4 of the prior so that noise cannot send the search far away."""
    others = sorted((abs(s - q), s) for s in tried if s != q)
    if not others:
        return prior
    s = others[0][1]
    measured = (db(tried[q].ms_ssim) - db(tried[s].ms_ssim)) / (q - s)
    return min(max(measured, prior / 4), prior * 4)


def smallest_meeting(
    measure: Callable[[int], Measured], need: float, start: float, slope: float
) -> Result:
    """Search settings LO..HI for the smallest whose measured MS-SSIM >= ``need``.

    ``start``/``slope``: the predicted answer and dB-per-step (from ``compaction.predictor``).
    The bracket (highest known miss, lowest known meet) shrinks on every encode, so the search
    always ends; with a good prediction it ends after two or three encodes."""
    tried: dict[int, Measured] = {}
    miss, meet = LO - 1, HI + 1
    q = min(max(round(start), LO), HI)
    target_db = db(need)
    while True:
        tried[q] = measure(q)
        if tried[q].ms_ssim >= need:
            meet = min(meet, q)
        else:
            miss = max(miss, q)
        if meet - miss <= 1:
            return Result(tried.get(meet), tried)
        estimate = q + (target_db - db(tried[q].ms_ssim)) / _slope(tried, q, slope)
        nxt = math.ceil(estimate - 1e-9)  # the first setting expected to meet
        nxt = min(nxt, q - 1) if q == meet else max(nxt, q + 1)  # always move inwards
        q = min(max(nxt, miss + 1), meet - 1)
