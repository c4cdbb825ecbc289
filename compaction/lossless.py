"""The lossless layer (bitstream mode 2): blended prediction, context-mixing arithmetic coding.

Pixels go through the reversible YCoCg-R transform and the three planes are coded one after
another (Y, then Co with Y known, then Cg with Y and Co known), pixel by pixel in raster order:

1. **Prediction.** Five predictors are blended by their recent local accuracy (JPEG XL's
   self-correcting "weighted predictor"): four of JPEG XL's error-feedback predictors and a
   least-squares predictor over 11 causal neighbours (plus, for chroma, the luma and Co
   residuals at the same pixel), whose weights are fitted per image by the encoder and sent in
   the header (156 bytes).
2. **Contexts.** Eleven contexts describe what the model knows about the residual: the local
   error energy, how well the best predictor did nearby, where the other predictors and the
   neighbours sit relative to the blended prediction (their disagreement says which way the
   residual leans), a texture pattern, and for chroma the luma residual under and around the
   sample (the whole luma plane is known by then, so also to the right and below).
3. **Coding.** The residual becomes binary decisions (zero? sign, bit length in unary,
   mantissa bits), each coded by ``compaction.entropy``: adaptive counters per context mixed by
   online-trained logistic mixers, then a binary arithmetic coder.

The probability model is learned while coding and the decoder learns the same one from the
same bits; nothing is trained offline (a prior learned on the training photos was measured and
did not help on 768x512 images: docs/codec.md). Every step is integer arithmetic, so the
bitstream decodes bit-for-bit on any machine.
"""

from __future__ import annotations

import struct

import numba as nb
import numpy as np

from compaction.colour import from_ycocg, to_ycocg
from compaction.entropy import (
    Model,
    code_bit,
    finish_encoding,
    new_coder,
    start_decoding,
)

VERSION = "lossless_cm_v2"
RANGES = ((0, 255), (-255, 255), (-255, 255))
MAX_PIXELS = 40_000_000  # the ingest cap; a header claiming more is corrupt
LS_NEIGHBOURS = 11
LS_SHIFT = 10  # least-squares weights are multiples of 2^-10
LS_SAMPLES = 60_000  # pixels sampled for the per-image fit
INPUTS, CONTEXTS, DECISIONS = 11, 256, 96
SELECTORS1, SELECTORS2 = 16, 32
BYTES_PER_SAMPLE = 4  # output capacity: 32 bits per sample, far above any real image
_HEADER = struct.Struct(">II")
_WEIGHTS = struct.Struct(">" + "i" * (3 * (LS_NEIGHBOURS + 2)))
# JPEG XL's default weighted-predictor parameters (p1C, p2C, p3Ca..c) and max weights; the
# least-squares predictor gets a larger max weight: it is the strongest of the five.
_P1C, _P2C, _P3C = 16, 10, 7
_MAX_WEIGHTS = (10, 10, 10, 10, 60)


class CorruptLossless(ValueError):
    """The lossless payload is malformed (the codec layer turns this into BITSTREAM_CORRUPT)."""


# ---------------------------------------------------------------------------- numba kernels


@nb.njit(cache=True)
def _qlog(v: int) -> int:
    """Two levels per octave: 0 -> 0, 1 -> 0, 2 -> 2, 3 -> 3, 4 -> 4, 6 -> 5 ..., capped at 15."""
    if v <= 0:
        return 0
    b = 0
    t = v
    while t > 1:
        t >>= 1
        b += 1
    return min(15, 2 * b + (1 if (v << 1) >= (3 << b) else 0))


@nb.njit(cache=True)
def _qsigned(v: int, levels: int) -> int:
    """A signed log quantiser onto 0..2*levels (``levels`` = zero)."""
    if v == 0:
        return levels
    a = min(levels, _qlog(abs(v)) // 2 + 1)
    return levels + a if v > 0 else levels - a


@nb.njit(cache=True)
def _error_weight(err_sum: int, max_weight: int) -> int:
    """JPEG XL's error2weight: a predictor's blend weight from its recent error sum."""
    shift = 0
    t = err_sum + 1
    while t > 1:
        t >>= 1
        shift += 1
    shift = max(0, shift - 5)
    return 4 + ((max_weight * ((1 << 24) // ((err_sum >> shift) + 1))) >> shift)


@nb.njit(cache=True)
def _at(x_plane: np.ndarray, y: int, x: int, fallback: int) -> int:
    h, w = x_plane.shape
    if 0 <= y < h and 0 <= x < w:
        return x_plane[y, x]
    return fallback


@nb.njit(cache=True)
def _code_residual(e, sel1, sel2, state, encode):
    """Binarise and code one residual: zero flag, sign, bit length (unary), mantissa bits."""
    magnitude = abs(e)
    if code_bit(1 if magnitude == 0 else 0, 0, sel1, sel2, state, encode):
        return 0
    neg = code_bit(1 if e < 0 else 0, 1, sel1, sel2, state, encode)
    rest = magnitude - 1
    length = 0
    while encode and rest >> length:
        length += 1
    n = 0
    while n < 8:  # bit length (at most 8) in unary; its decisions also know the sign
        if not code_bit(1 if length > n else 0, 2 + 2 * n + neg, sel1, sel2, state, encode):
            break
        n += 1
    value = 1 if n > 0 else 0
    for j in range(n - 1):  # mantissa below the leading one, high bits first
        bit = (rest >> (n - 2 - j)) & 1
        value = (value << 1) | code_bit(bit, 24 + n * 8 + min(j, 7), sel1, sel2, state, encode)
    return -(value + 1) if neg else value + 1


@nb.njit(cache=True)
def _code_plane(plane, lo, hi, side, ls_w, model, regs, buf, encode):
    """Code one plane (encode: read ``plane``; decode: fill it). Returns its residuals, which
    later planes use as side information."""
    h, w = plane.shape
    n_side = side.shape[0]
    span = hi - lo + 1
    mid = (lo + hi) // 2
    true_err = np.zeros((h + 2, w + 4), dtype=np.int64)  # blended prediction - actual, x8
    sub_err = np.zeros((5, h + 2, w + 4), dtype=np.int64)  # |sub-prediction - actual|, x1
    residuals = np.zeros((h, w), dtype=np.int64)
    preds = np.zeros(5, dtype=np.int64)
    ctx = np.zeros(INPUTS, dtype=np.int64)  # filled per sample, read by code_bit
    probs, counts, weights1, weights2 = model
    state = (
        ctx,
        np.zeros(INPUTS + 1, dtype=np.int64),
        probs,
        counts,
        weights1,
        weights2,
        regs,
        buf,
    )
    for y in range(h):
        for x in range(w):
            # Causal neighbours; outside the image they repeat the nearest known one.
            wv = plane[y, x - 1] if x > 0 else (plane[y - 1, x] if y > 0 else mid)
            nv = _at(plane, y - 1, x, wv)
            nw = _at(plane, y - 1, x - 1, nv)
            ne = _at(plane, y - 1, x + 1, nv)
            ww = _at(plane, y, x - 2, wv)
            nn = _at(plane, y - 2, x, nv)
            nne = _at(plane, y - 2, x + 1, ne)
            nnw = _at(plane, y - 2, x - 1, nw)
            nww = _at(plane, y - 1, x - 2, nw)
            nee = _at(plane, y - 1, x + 2, ne)
            yy, xx = y + 2, x + 2
            te_w, te_n = true_err[yy, xx - 1], true_err[yy - 1, xx]
            te_nw, te_ne = true_err[yy - 1, xx - 1], true_err[yy - 1, xx + 1]
            w8, n8, ne8 = wv << 3, nv << 3, ne << 3

            # 1. Prediction (x8 fixed point).
            preds[0] = w8 + ne8 - n8
            preds[1] = n8 - (((te_w + te_n + te_ne) * _P1C) >> 5)
            preds[2] = w8 - (((te_w + te_n + te_nw) * _P2C) >> 5)
            preds[3] = n8 - (((te_nw + te_n + te_ne) * _P3C) >> 5)
            lo_wn, hi_wn = min(wv, nv), max(wv, nv)
            med = lo_wn if nw >= hi_wn else (hi_wn if nw <= lo_wn else wv + nv - nw)
            acc = ls_w[0] * med + ls_w[1] * wv + ls_w[2] * nv + ls_w[3] * nw + ls_w[4] * ne
            acc += ls_w[5] * ww + ls_w[6] * nn + ls_w[7] * nne + ls_w[8] * nnw
            acc += ls_w[9] * nww + ls_w[10] * nee
            for k in range(n_side):
                acc += ls_w[LS_NEIGHBOURS + k] * side[k, y, x]
            preds[4] = (acc + (1 << (LS_SHIFT - 4))) >> (LS_SHIFT - 3)
            total, blend, wp_total, wp_blend, best = 0, 0, 0, 0, 1 << 60
            for i in range(5):
                err_sum = (
                    sub_err[i, yy - 1, xx] + sub_err[i, yy, xx - 1] + sub_err[i, yy - 1, xx - 1]
                    + sub_err[i, yy, xx - 2] + sub_err[i, yy - 1, xx + 1]
                )  # fmt: skip
                best = min(best, err_sum)
                weight = _error_weight(err_sum, _MAX_WEIGHTS[i])
                total += weight
                blend += weight * preds[i]
                if i < 4:
                    wp_total += weight
                    wp_blend += weight * preds[i]
            pred8 = (blend + (total >> 1)) // total
            wp8 = (wp_blend + (wp_total >> 1)) // wp_total
            if ((te_w ^ te_n) | (te_w ^ te_nw)) <= 0:  # recent errors disagree: stay in range
                pred8 = max(min(w8, n8, ne8), min(max(w8, n8, ne8), pred8))
            pred8 = max(lo << 3, min(hi << 3, pred8))
            pred = (pred8 + 4) >> 3

            # 2. Contexts.
            energy = _qlog((abs(te_w) + abs(te_n) + (abs(te_ne) + abs(te_nw)) // 2) >> 2)
            best_q = _qlog(best >> 3)
            side_q = 0
            for k in range(n_side):
                side_q += abs(side[k, y, x])
            ctx[0] = energy
            ctx[1] = best_q * 8 + min(7, _qlog(side_q) // 2)
            ctx[2] = 0
            ctx[3] = energy * 16 + best_q
            ctx[4] = (
                _qsigned(wp8 - pred8, 6) * 16 + (energy >> 1) * 2 + (1 if pred8 >= pred << 3 else 0)
            )
            ctx[5] = _qsigned(n8 - pred8, 6) * 16 + _qsigned(w8 - pred8, 6)
            ctx[6] = _qsigned(ne8 - pred8, 6) * 16 + _qsigned(te_n + te_w, 6)
            texture = 0
            for bit_index, value in enumerate((w8, n8, nw << 3, ne8, ww << 3, nn << 3)):
                if value > pred8:
                    texture |= 1 << bit_index
            ctx[8] = texture * 4 + (energy >> 2)
            ctx[9] = _qsigned(preds[1] - pred8, 6) * 16 + _qsigned(preds[2] - pred8, 6)
            if n_side > 0:
                ctx[7] = _qsigned(side[0, y, x], 7) * 16 + energy
                around = _at(side[0], y, x + 1, 0) + _at(side[0], y + 1, x, 0)
                ctx[10] = _qsigned(side[n_side - 1, y, x], 7) * 16 + _qsigned(around, 7)
            else:
                ctx[7] = _qsigned(preds[0] - pred8, 6) * 16 + energy
                ctx[10] = _qsigned((nn << 3) - pred8, 6) * 16 + _qsigned((ww << 3) - pred8, 6)
            sel1 = energy
            sel2 = (ctx[4] >> 4) * 2 + (1 if n_side > 0 and side[0, y, x] != 0 else 0)

            # 3. The residual, wrapped into the plane's range (the decoder unwraps it).
            e = 0
            if encode:
                e = ((plane[y, x] - pred + span // 2) % span) - span // 2
            e = _code_residual(e, sel1, sel2, state, encode)
            if not encode:
                plane[y, x] = ((pred + e - lo) % span) + lo
            residuals[y, x] = e
            actual8 = plane[y, x] << 3
            true_err[yy, xx] = pred8 - actual8
            for i in range(5):
                sub_err[i, yy, xx] = (abs(preds[i] - actual8) + 3) >> 3
    return residuals


# ---------------------------------------------------------------------------- encoder side


def _ls_features(plane: np.ndarray, side: list[np.ndarray]) -> np.ndarray:
    """The least-squares predictor's inputs at every pixel (borders: edge-replicated; the fit
    only needs them to be typical)."""
    p = np.pad(plane, 2, mode="edge")
    at = {
        name: p[2 + dy : p.shape[0] - 2 + dy, 2 + dx : p.shape[1] - 2 + dx]
        for name, (dy, dx) in {
            "w": (0, -1), "n": (-1, 0), "nw": (-1, -1), "ne": (-1, 1), "ww": (0, -2),
            "nn": (-2, 0), "nne": (-2, 1), "nnw": (-2, -1), "nww": (-1, -2), "nee": (-1, 2),
        }.items()
    }  # fmt: skip
    lo, hi = np.minimum(at["w"], at["n"]), np.maximum(at["w"], at["n"])
    med = np.where(at["nw"] >= hi, lo, np.where(at["nw"] <= lo, hi, at["w"] + at["n"] - at["nw"]))
    order = ("w", "n", "nw", "ne", "ww", "nn", "nne", "nnw", "nww", "nee")
    return np.stack([med.ravel(), *(at[k].ravel() for k in order), *(s.ravel() for s in side)], 1)


def _fit_weights(plane: np.ndarray, side: list[np.ndarray]) -> np.ndarray:
    """Least-squares predictor weights for this plane, as integers (multiples of 2^-10)."""
    feats = _ls_features(plane, side).astype(np.float64)
    pick = np.random.default_rng(0).choice(
        len(feats), size=min(LS_SAMPLES, len(feats)), replace=False
    )
    sol, *_ = np.linalg.lstsq(feats[pick], plane.ravel()[pick].astype(np.float64), rcond=None)
    weights = np.zeros(LS_NEIGHBOURS + 2, dtype=np.int64)
    weights[: len(sol)] = np.clip(np.round(sol * (1 << LS_SHIFT)), -(1 << 20), 1 << 20)
    return weights


def _fresh_model() -> tuple[np.ndarray, ...]:
    return Model.fresh(INPUTS, CONTEXTS, DECISIONS, SELECTORS1, SELECTORS2).arrays()


def _side(previous: list[np.ndarray], h: int, w: int) -> np.ndarray:
    return np.stack(previous) if previous else np.zeros((0, h, w), dtype=np.int64)


def encode(rgb: np.ndarray) -> bytes:
    """HxWx3 uint8 -> lossless bitstream (header, predictor weights, arithmetic-coded planes)."""
    h, w = rgb.shape[:2]
    planes = to_ycocg(rgb)
    buf = np.zeros(3 * h * w * BYTES_PER_SAMPLE + 64, dtype=np.uint8)
    regs = new_coder()
    weights: list[np.ndarray] = []
    previous: list[np.ndarray] = []
    for c, (lo, hi) in enumerate(RANGES):
        ls_w = _fit_weights(planes[c], previous)
        residuals = _code_plane(
            planes[c].copy(), lo, hi, _side(previous, h, w), ls_w, _fresh_model(), regs, buf, True
        )
        weights.append(ls_w)
        previous.append(residuals)
    size = finish_encoding(regs, buf)
    if size > len(buf):
        raise ValueError("lossless coder output exceeded its capacity")
    head = _HEADER.pack(h, w) + _WEIGHTS.pack(*np.concatenate(weights).tolist())
    return head + buf[:size].tobytes()


def decode(data: bytes, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Lossless bitstream -> the exact HxWx3 uint8 pixels. ``shape`` (from the container's
    header) must match the payload's own, so a damaged size never costs a huge decode."""
    if len(data) < _HEADER.size + _WEIGHTS.size:
        raise CorruptLossless("lossless payload is truncated")
    h, w = _HEADER.unpack_from(data)
    if h == 0 or w == 0 or h * w > MAX_PIXELS or (shape is not None and (h, w) != shape):
        raise CorruptLossless(f"lossless payload claims an impossible size {h}x{w}")
    flat = np.array(_WEIGHTS.unpack_from(data, _HEADER.size), dtype=np.int64)
    weights = flat.reshape(3, LS_NEIGHBOURS + 2)
    # a writable copy: the kernel that reads it is the one that writes when encoding
    buf = np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size + _WEIGHTS.size).copy()
    regs = new_coder()
    start_decoding(regs, buf)
    planes: list[np.ndarray] = []
    previous: list[np.ndarray] = []
    for c, (lo, hi) in enumerate(RANGES):
        plane = np.zeros((h, w), dtype=np.int64)
        residuals = _code_plane(
            plane, lo, hi, _side(previous, h, w), weights[c], _fresh_model(), regs, buf, False
        )
        planes.append(plane)
        previous.append(residuals)
    return from_ycocg(np.stack(planes))
