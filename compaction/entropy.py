"""Context-mixing binary arithmetic coding, in integer arithmetic, compiled with numba.

The lossless coder reduces every residual to a few yes/no decisions. The probability of each
decision is *learned while coding*, the way PAQ-family coders learn:

- K adaptive counters, one per context the caller computes (local error energy, where other
  predictors sit relative to ours, texture, the luma error under a chroma sample, ...). Each is
  a 16-bit probability that moves towards every observed bit at rate 1/(n + 1.5), n capped, so
  a new context learns fast and an old one settles;
- two logistic mixers (online logistic regression: one gradient step per bit) combine the
  counters' probabilities in the logistic ("stretched") domain, each with weight sets picked by
  its own small selector context; their outputs are averaged;
- a 32-bit binary arithmetic coder (after Matt Mahoney's lpaq1) spends -log2(p) bits per
  decision, within a few bytes of the model's ideal code length per plane.

The decoder repeats every update on the bits it decodes, so it learns exactly the same model.
Everything is integer arithmetic — the logistic function and its inverse are integer tables
built from integers — so a bitstream decodes bit-for-bit on any machine, whatever its floating
point, SIMD width or compiler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

# squash(x) = 4096 / (1 + e^(-x/256)) at x = -2048, -1920, ..., 2048 (lpaq1's table).
_SQUASH_KNOTS = np.array(
    [1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994,
     3348, 3607, 3785, 3901, 3975, 4024, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094],
    dtype=np.int64,
)  # fmt: skip
LIMIT = 127  # counters stop slowing down after this many observations
MIXER_RATE = 6
MIXER_INIT = 65536 // 5  # initial weight of each input (1.0 = 65536)


@nb.njit(cache=True)
def squash(x: int) -> int:
    """The logistic function on the integer grid: stretched x (1/256 nats) -> 12-bit p."""
    if x > 2047:
        return 4095
    if x < -2047:
        return 1
    w = x & 127
    i = (x >> 7) + 16
    return (_SQUASH_KNOTS[i] * (128 - w) + _SQUASH_KNOTS[i + 1] * w + 64) >> 7


def _stretch_table() -> np.ndarray:
    """The inverse of ``squash`` for every 12-bit probability (plain Python: no compilation at
    import)."""
    table = np.zeros(4096, dtype=np.int64)
    start = 0
    for x in range(-2047, 2048):
        v = squash.py_func(x)
        for p in range(start, v + 1):
            table[p] = x
        start = v + 1
    for p in range(start, 4096):
        table[p] = 2047
    return table


STRETCH = _stretch_table()
# Counter adaptation rate 1/(n + 1.5) as a 16-bit fixed-point integer (exact integer division).
RATE = np.array([131072 // (2 * n + 3) for n in range(LIMIT + 1)], dtype=np.int64)


@dataclass
class Model:
    """The adaptive state of one coded plane; encoder and decoder start from the same one."""

    probs: np.ndarray  # (inputs, contexts, decisions) 16-bit P(bit = 1)
    counts: np.ndarray  # observations per counter, capped at LIMIT
    weights1: np.ndarray  # (decisions, selectors1, inputs + 1) mixer 1, 16.16 fixed point
    weights2: np.ndarray  # (decisions, selectors2, inputs + 1) mixer 2

    @classmethod
    def fresh(
        cls, inputs: int, contexts: int, decisions: int, selectors1: int, selectors2: int
    ) -> Model:
        probs = np.full((inputs, contexts, decisions), 1 << 15, dtype=np.int64)
        w1 = np.full((decisions, selectors1, inputs + 1), MIXER_INIT, dtype=np.int64)
        w2 = np.full((decisions, selectors2, inputs + 1), MIXER_INIT, dtype=np.int64)
        w1[:, :, inputs] = 0  # the bias input starts neutral
        w2[:, :, inputs] = 0
        return cls(probs, np.zeros_like(probs), w1, w2)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (self.probs, self.counts, self.weights1, self.weights2)


def new_coder() -> np.ndarray:
    """Coder registers: [low, high, code, position]."""
    return np.array([0, 0xFFFFFFFF, 0, 0], dtype=np.int64)


def start_decoding(regs: np.ndarray, buf: np.ndarray) -> None:
    """Prime the decoder with the stream's first four bytes."""
    for _ in range(4):
        regs[2] = (regs[2] << 8) | _read(buf, regs[3])
        regs[3] += 1


def finish_encoding(regs: np.ndarray, buf: np.ndarray) -> int:
    """Flush the encoder (all four bytes of ``low``); returns the stream length in bytes."""
    for shift in (24, 16, 8, 0):
        _write(buf, regs[3], (regs[0] >> shift) & 0xFF)
        regs[3] += 1
    return int(regs[3])


@nb.njit(cache=True)
def _read(buf: np.ndarray, pos: int) -> int:
    return buf[pos] if pos < buf.shape[0] else 0  # a truncated stream decodes to garbage, safely


@nb.njit(cache=True)
def _write(buf: np.ndarray, pos: int, byte: int) -> None:
    if pos < buf.shape[0]:  # past the end: the caller sees position > capacity and refuses
        buf[pos] = byte


@nb.njit(cache=True)
def _clamp(x: int) -> int:
    return max(-2047, min(2047, x))


@nb.njit(cache=True)
def code_bit(bit: int, d: int, sel1: int, sel2: int, state: tuple, encode: bool) -> int:
    """Code decision ``d`` (encode: ``bit``; decode: the returned bit) and learn from it.

    ``state`` is ``(ctx, st, probs, counts, weights1, weights2, regs, buf)``: ``ctx[k]`` is the
    context of input k (set by the caller per sample), ``st`` scratch for the stretched inputs
    (one longer than ``ctx``), then the ``Model`` arrays, the coder registers and the stream.
    ``sel1``/``sel2`` pick the two mixers' weight sets.
    """
    ctx, st, probs, counts, weights1, weights2, regs, buf = state
    k_in = ctx.shape[0]
    for k in range(k_in):
        st[k] = STRETCH[probs[k, ctx[k], d] >> 4]
    st[k_in] = 256  # bias
    w1 = weights1[d, sel1]
    w2 = weights2[d, sel2]
    dot1 = 0
    dot2 = 0
    for k in range(k_in + 1):
        dot1 += w1[k] * st[k]
        dot2 += w2[k] * st[k]
    dot1 = _clamp(dot1 >> 16)
    dot2 = _clamp(dot2 >> 16)
    p = max(1, min(4095, squash((dot1 + dot2) >> 1)))  # P(bit = 1), 12 bits

    low, high = regs[0], regs[1]
    mid = low + ((high - low) >> 12) * p
    if not encode:
        bit = 1 if regs[2] <= mid else 0
    if bit:
        high = mid
    else:
        low = mid + 1
    while ((low ^ high) & 0xFF000000) == 0:  # top bytes agree: they are final
        if encode:
            _write(buf, regs[3], high >> 24)
        else:
            regs[2] = ((regs[2] << 8) & 0xFFFFFFFF) | _read(buf, regs[3])
        regs[3] += 1
        low = (low << 8) & 0xFFFFFFFF
        high = ((high << 8) & 0xFFFFFFFF) | 0xFF
    regs[0], regs[1] = low, high

    # Learn: one gradient step per mixer (each on its own prediction), then the counters.
    err1 = ((bit << 12) - squash(dot1)) * MIXER_RATE
    err2 = ((bit << 12) - squash(dot2)) * MIXER_RATE
    for k in range(k_in + 1):
        w1[k] += (st[k] * err1) >> 14
        w2[k] += (st[k] * err2) >> 14
    target = bit << 16
    for k in range(k_in):
        c = ctx[k]
        n = counts[k, c, d]
        probs[k, c, d] += ((target - probs[k, c, d]) * RATE[n]) >> 16
        if n < LIMIT:
            counts[k, c, d] = n + 1
    return bit
