"""The first lossless coder (bitstream mode 1), kept so that stored v1 bitstreams still decode.

New compact forms use ``compaction.lossless`` (mode 2): it codes about 8% fewer bits on unseen
photos. This module is frozen: changing anything here changes what old bitstreams decode to.

A learned context model over prediction residuals, range-coded.

Pixels go through the reversible YCoCg-R colour transform. Each sample is predicted by an
integer linear predictor over the MED/LOCO-I predictor, six causal neighbours and, for chroma,
the same pixel's luma/Co residual; its weights are least-squares fitted per image (sent in the
header, 96 bytes). The residual is coded with a probability table chosen by a context (local
gradients plus neighbouring residual magnitudes); the tables are histograms learned on the
training photos and stored as integers. Everything the decoder computes is integer arithmetic,
so a bitstream decodes bit-for-bit on any machine.

Speed: the image is cut into 128x128 tiles decoded side by side, and inside a tile along
anti-diagonal wavefronts (t = 2y + x): every pixel of a front depends only on earlier fronts, so
each front of all tiles is one vectorised batch, coded context by context with prebuilt models.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import constriction
import numpy as np

from compaction.colour import from_ycocg, to_ycocg

MODEL_PATH = Path(__file__).parent / "weights" / "lossless_v1.npz"
ALPHABET = 511
OFFSET = 255
CONTEXTS = 24
PRED_SHIFT = 10
TABLE_TOTAL = 1 << 20
TILE = 128
N_FEATS = (7, 8, 9)
# Context thresholds: two per octave of activity, as integers.
THRESHOLDS = np.unique(np.round(2.0 ** (np.arange(1, CONTEXTS) / 2.0)).astype(np.int64) - 1)
RANGES = ((0, 255), (-255, 255), (-255, 255))
_HEADER = struct.Struct(">II")
_WEIGHTS = struct.Struct(">" + "i" * sum(N_FEATS))


@dataclass
class LosslessModel:
    tables: np.ndarray  # (3, CONTEXTS, ALPHABET) int64 frequencies summing to TABLE_TOTAL
    version: str
    _models: list[list[Any]] | None = None

    def coder_model(self, c: int, ctx: int) -> Any:
        """A prebuilt constriction model for channel ``c`` and context ``ctx``."""
        if self._models is None:
            self._models = [
                [
                    constriction.stream.model.Categorical(
                        self.tables[ch, k].astype(np.float64) / TABLE_TOTAL, perfect=False
                    )
                    for k in range(CONTEXTS)
                ]
                for ch in range(3)
            ]
        return self._models[c][ctx]


@dataclass
class _Grid:
    """An image cut into tiles; sample/residual arrays are (3, tiles, TILE+2, TILE+3)."""

    h: int
    w: int
    tiles_y: int
    tiles_x: int

    @classmethod
    def of(cls, h: int, w: int) -> _Grid:
        return cls(h, w, -(-h // TILE), -(-w // TILE))

    def empty(self) -> np.ndarray:
        return np.zeros((3, self.tiles_y * self.tiles_x, TILE + 2, TILE + 3), dtype=np.int64)

    def split(self, planes: np.ndarray) -> np.ndarray:
        ph, pw = self.tiles_y * TILE, self.tiles_x * TILE
        full = np.pad(planes, ((0, 0), (0, ph - self.h), (0, pw - self.w)))
        tiles = full.reshape(3, self.tiles_y, TILE, self.tiles_x, TILE).transpose(0, 1, 3, 2, 4)
        out = self.empty()
        out[:, :, 2 : TILE + 2, 2 : TILE + 2] = tiles.reshape(3, -1, TILE, TILE)
        return out

    def valid(self, ts: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Which (tile, y, x) positions lie inside the image (padding is neither coded nor used)."""
        gy = (ts // self.tiles_x) * TILE + ys
        gx = (ts % self.tiles_x) * TILE + xs
        return (gy < self.h) & (gx < self.w)

    def join(self, padded: np.ndarray) -> np.ndarray:
        inner = padded[:, :, 2 : TILE + 2, 2 : TILE + 2]
        tiles = inner.reshape(3, self.tiles_y, self.tiles_x, TILE, TILE).transpose(0, 1, 3, 2, 4)
        return tiles.reshape(3, self.tiles_y * TILE, self.tiles_x * TILE)[:, : self.h, : self.w]


def _gather(arr: np.ndarray, ts: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> list[np.ndarray]:
    y, x = ys + 2, xs + 2
    return [
        arr[ts, y, x - 1],
        arr[ts, y - 1, x],
        arr[ts, y - 1, x - 1],
        arr[ts, y - 1, x + 1],
        arr[ts, y, x - 2],
        arr[ts, y - 2, x],
    ]


def _features(samples: np.ndarray, errors: np.ndarray, c: int, pos: tuple[np.ndarray, ...]):
    """Predictor features and context activity of channel ``c`` at positions (tile, y, x)."""
    w, n, nw, ne, ww, nn = _gather(samples[c], *pos)
    lo, hi = np.minimum(w, n), np.maximum(w, n)
    med = np.where(nw >= hi, lo, np.where(nw <= lo, hi, w + n - nw))
    feats = [med, w, n, nw, ne, ww, nn]
    ew, en, enw, ene, _eww, _enn = (np.abs(e) for e in _gather(errors[c], *pos))
    activity = np.abs(w - nw) + np.abs(n - nw) + np.abs(n - ne) + 2 * (ew + en) + (enw + ene) // 2
    ts, ys, xs = pos
    for other in range(c):
        here = errors[other][ts, ys + 2, xs + 2]
        feats.append(here)
        activity = activity + 2 * np.abs(here)
    return np.stack(feats, axis=1), np.searchsorted(THRESHOLDS, activity, side="right")


def _predict(feats: np.ndarray, weights: np.ndarray, c: int) -> np.ndarray:
    lo, hi = RANGES[c]
    return np.clip((feats @ weights + (1 << (PRED_SHIFT - 1))) >> PRED_SHIFT, lo, hi)


def _wrap(value: np.ndarray, c: int) -> np.ndarray:
    lo, hi = RANGES[c]
    span = hi - lo + 1
    return ((value + span // 2) % span) - span // 2


def _unwrap(pred: np.ndarray, residual: np.ndarray, c: int) -> np.ndarray:
    lo, hi = RANGES[c]
    return ((pred + residual - lo) % (hi - lo + 1)) + lo


def _all_positions(grid: _Grid) -> tuple[np.ndarray, ...]:
    ts, ys, xs = np.mgrid[0 : grid.tiles_y * grid.tiles_x, 0:TILE, 0:TILE]
    return ts.ravel(), ys.ravel(), xs.ravel()


def _med_only(c: int) -> np.ndarray:
    w = np.zeros(N_FEATS[c], dtype=np.int64)
    w[0] = 1 << PRED_SHIFT
    return w


def _analyse(samples: np.ndarray, grid: _Grid, weights: list[np.ndarray] | None, sample: int = 0):
    """Encoder side, vectorised: per channel residuals, contexts (and LS-fitted weights)."""
    pos = _all_positions(grid)
    target = samples[:, pos[0], pos[1] + 2, pos[2] + 2]
    errors = grid.empty()
    valid = grid.valid(*pos)
    fitted, residuals, contexts = [], [], []
    rng = np.random.default_rng(0)
    for c in range(3):
        feats, _ = _features(samples, errors, c, pos)
        if weights is None:
            inside = np.flatnonzero(valid)
            pick = rng.choice(inside, size=min(sample or len(inside), len(inside)), replace=False)
            sol, *_ = np.linalg.lstsq(feats[pick].astype(np.float64), target[c][pick], rcond=None)
            wc = np.round(sol * (1 << PRED_SHIFT)).astype(np.int64)
        else:
            wc = weights[c]
        e = np.where(valid, _wrap(target[c] - _predict(feats, wc, c), c), 0)
        errors[c][pos[0], pos[1] + 2, pos[2] + 2] = e
        _, ctx = _features(samples, errors, c, pos)  # contexts see the plane's own residuals
        fitted.append(wc)
        residuals.append(e)
        contexts.append(ctx)
    return fitted, residuals, contexts


def _fronts() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Tile-local pixel coordinates grouped by wavefront t = 2y + x."""
    ys, xs = (a.ravel() for a in np.mgrid[0:TILE, 0:TILE])
    t = 2 * ys + xs
    return [ys[t == k] for k in range(t.max() + 1)], [xs[t == k] for k in range(t.max() + 1)]


def _front_positions(grid: _Grid, fy: np.ndarray, fx: np.ndarray) -> tuple[np.ndarray, ...]:
    n_tiles = grid.tiles_y * grid.tiles_x
    ts = np.repeat(np.arange(n_tiles), len(fy))
    return ts, np.tile(fy, n_tiles), np.tile(fx, n_tiles)


def encode(rgb: np.ndarray, model: LosslessModel | None = None) -> bytes:
    """HxWx3 uint8 -> lossless bitstream."""
    model = model or load_model()
    h, w = rgb.shape[:2]
    grid = _Grid.of(h, w)
    samples = grid.split(to_ycocg(rgb))
    weights, residuals, contexts = _analyse(samples, grid, None, sample=50000)
    # Flat index of every (tile, y, x) in the vectorised arrays of _analyse.
    encoder = constriction.stream.queue.RangeEncoder()
    for fy, fx in zip(*_fronts(), strict=True):
        ts, ys, xs = _front_positions(grid, fy, fx)
        flat = ((ts * TILE + ys) * TILE + xs)[grid.valid(ts, ys, xs)]
        for c in range(3):
            symbols = (residuals[c][flat] + OFFSET).astype(np.int32)
            ctx = contexts[c][flat]
            for k in np.unique(ctx):
                encoder.encode(symbols[ctx == k], model.coder_model(c, int(k)))
    head = _HEADER.pack(h, w) + _WEIGHTS.pack(*np.concatenate(weights).tolist())
    return head + encoder.get_compressed().astype(">u4").tobytes()


def decode(data: bytes, model: LosslessModel | None = None) -> np.ndarray:
    """Lossless bitstream -> the exact HxWx3 uint8 pixels."""
    model = model or load_model()
    h, w = _HEADER.unpack_from(data)
    flat_w = np.array(_WEIGHTS.unpack_from(data, _HEADER.size), dtype=np.int64)
    weights = np.split(flat_w, np.cumsum(N_FEATS)[:-1])
    offset = _HEADER.size + _WEIGHTS.size
    words = np.frombuffer(data, dtype=">u4", offset=offset).astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    grid = _Grid.of(h, w)
    samples, errors = grid.empty(), grid.empty()
    for fy, fx in zip(*_fronts(), strict=True):
        pos = _front_positions(grid, fy, fx)
        inside = grid.valid(*pos)
        pos = tuple(p[inside] for p in pos)
        ts, ys, xs = pos
        if len(ts) == 0:
            continue
        for c in range(3):
            feats, ctx = _features(samples, errors, c, pos)
            pred = _predict(feats, weights[c], c)
            e = np.empty(len(ctx), dtype=np.int64)
            for k in np.unique(ctx):
                mask = ctx == k
                e[mask] = decoder.decode(model.coder_model(c, int(k)), int(mask.sum()))
            e -= OFFSET
            samples[c][ts, ys + 2, xs + 2] = _unwrap(pred, e, c)
            errors[c][ts, ys + 2, xs + 2] = e
    return from_ycocg(grid.join(samples))


def fit(images: list[np.ndarray]) -> LosslessModel:
    """Learn the context tables (histograms of residuals per context) from training images."""
    counts = np.zeros((3, CONTEXTS, ALPHABET), dtype=np.float64)
    for rgb in images:
        grid = _Grid.of(*rgb.shape[:2])
        _, residuals, contexts = _analyse(grid.split(to_ycocg(rgb)), grid, None, sample=50000)
        valid = grid.valid(*_all_positions(grid))
        for c in range(3):
            np.add.at(counts[c], (contexts[c][valid], residuals[c][valid] + OFFSET), 1.0)
    tables = np.stack([[_quantise_table(row) for row in counts[c]] for c in range(3)])
    return LosslessModel(tables=tables, version=_version(tables))


def _quantise_table(counts: np.ndarray) -> np.ndarray:
    """Smoothed histogram -> integer frequencies (each >= 1) summing to exactly TABLE_TOTAL."""
    p = (counts + 0.05) / (counts.sum() + 0.05 * ALPHABET)
    freq = np.maximum(1, np.floor(p * (TABLE_TOTAL - ALPHABET)).astype(np.int64))
    freq[np.argmax(freq)] += TABLE_TOTAL - freq.sum()
    return freq


def _version(tables: np.ndarray) -> str:
    return "lossless_v1-" + hashlib.sha256(tables.astype(np.int64).tobytes()).hexdigest()[:12]


def save_model(model: LosslessModel, path: Path = MODEL_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, tables=model.tables.astype(np.int32))


_model: LosslessModel | None = None


def load_model() -> LosslessModel:
    """The shipped lossless model (integer tables)."""
    global _model
    if _model is None:
        with np.load(MODEL_PATH) as z:
            tables = z["tables"].astype(np.int64)
        _model = LosslessModel(tables=tables, version=_version(tables))
    return _model


def ideal_bits(rgb: np.ndarray, model: LosslessModel) -> float:
    """The model's ideal code length for an image (diagnostics)."""
    grid = _Grid.of(*rgb.shape[:2])
    _, residuals, contexts = _analyse(grid.split(to_ycocg(rgb)), grid, None, sample=50000)
    v = grid.valid(*_all_positions(grid))
    p = [model.tables[c][contexts[c][v], residuals[c][v] + OFFSET] / TABLE_TOTAL for c in range(3)]
    return float(sum(-np.log2(pc).sum() for pc in p))
