"""A fitted predictor of the encoder setting that just meets an MS-SSIM target, per codec.

The quality search (``compaction.search``) always measures; this only tells it where to look,
so a poor prediction costs encodes, never quality. Model, per codec, with quality in dB
(``-10 log10(1 - MS-SSIM)``) and ``q`` the setting:

    dB(q) ~= offset + shape(q)

``shape`` is the median curve over the training photos (tabulated at GRID settings, relative to
its value at q=50); ``offset`` is, before anything is measured, a linear function of the image's
activity (log mean luma gradient), and afterwards what the measured candidate nearest the
target implies; once two are measured (preferably one on each side of the target) the curve
is also scaled to pass through both. The answer is the setting where it crosses the target.
Fitted on the training photos (never Kodak):

    python -m compaction.predictor [--data DIR] [--images N]

writes ``compaction/weights/predictor.json`` (the rate-quality curves it measured are cached in
``data/train-cache/`` so a refit is quick).
"""

from __future__ import annotations

import argparse
import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compaction.search import Estimator, Measured, db

MODEL_PATH = Path(__file__).parent / "weights" / "predictor.json"
GRID = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95, 100)
_MID = GRID.index(50)
# For a codec the model lacks (or before it is fitted): a straight line, 0.15 dB per step.
_FALLBACK = {"shape": [0.15 * (q - 50) for q in GRID], "offset": [15.0, 0.0]}


def activity(rgb: np.ndarray) -> float:
    """log of the mean absolute luma gradient: busy images need higher settings."""
    y = rgb[::2, ::2].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grad = np.abs(np.diff(y, axis=0)).mean() + np.abs(np.diff(y, axis=1)).mean()
    return math.log(float(grad) + 1.0)


@lru_cache(maxsize=1)
def _model() -> dict[str, Any]:
    return json.loads(MODEL_PATH.read_text()) if MODEL_PATH.exists() else {}


def _increasing(values: np.ndarray) -> np.ndarray:
    """Non-decreasing, then nudged strictly increasing so the curve can be inverted."""
    return np.maximum.accumulate(values) + np.arange(len(values)) * 1e-6


def estimator(codec: str, need: float, act: float) -> Estimator:
    """The search's estimator for reaching MS-SSIM ``need`` with ``codec`` on an image of
    activity ``act``."""
    m = _model().get(codec, _FALLBACK)
    shape = _increasing(np.array(m["shape"], dtype=np.float64))
    grid = np.array(GRID, dtype=np.float64)
    target = db(need)

    def estimate(tried: dict[int, Measured]) -> float:
        points = sorted(tried, key=lambda q: abs(db(tried[q].ms_ssim) - target))
        above = [q for q in points if db(tried[q].ms_ssim) >= target]
        below = [q for q in points if db(tried[q].ms_ssim) < target]
        pair = [above[0], below[0]] if above and below else points[:2]
        if len(pair) == 2 and pair[0] != pair[1]:  # two measurements: fit offset and scale
            (q1, q2), (d1, d2) = pair, [db(tried[q].ms_ssim) for q in pair]
            s1, s2 = (float(np.interp(q, grid, shape)) for q in (q1, q2))
            scale = (d1 - d2) / (s1 - s2) if s1 != s2 else 1.0
            scale = min(max(scale, 0.25), 4.0)
            return float(np.interp(s1 + (target - d1) / scale, shape, grid))
        if tried:  # one measurement: the median shape through it
            q = points[0]
            offset = db(tried[q].ms_ssim) - float(np.interp(q, grid, shape))
        else:
            offset = m["offset"][0] + m["offset"][1] * act
        return float(np.interp(target - offset, shape, grid))

    return estimate


# --- fitting ---------------------------------------------------------------------------------


def _curve(rgb: np.ndarray, codec: str) -> np.ndarray:
    """MS-SSIM dB at every GRID setting."""
    from compaction import metrics, renditions

    ref = metrics.Reference(rgb)
    enc = renditions.LOSSY_ENCODERS[codec]
    return np.array([db(ref.ms_ssim(renditions.decode(enc(rgb, q), codec))) for q in GRID])


def fit(curves: np.ndarray, acts: np.ndarray) -> dict[str, Any]:
    """One codec's model from its curves (images x GRID) and the images' activities."""
    curves = np.maximum.accumulate(curves, axis=1)
    rel = curves - curves[:, _MID : _MID + 1]
    shape = np.median(rel, axis=0)
    x = np.stack([np.ones(len(acts)), acts], axis=1)
    offset, *_ = np.linalg.lstsq(x, curves[:, _MID], rcond=None)
    spread = np.abs(rel - shape).mean(axis=0)  # how far single images stray from the shape
    return {
        "shape": [round(float(v), 5) for v in shape],
        "offset": [round(float(v), 5) for v in offset],
        "offset_mean_abs_error_db": round(float(np.abs(x @ offset - curves[:, _MID]).mean()), 4),
        "shape_mean_abs_error_db": [round(float(v), 4) for v in spread],
        "images": len(acts),
    }


def _training_images(data: Path, limit: int) -> list[tuple[str, np.ndarray]]:
    from compaction.train import _load, _photos

    out = []
    for path in _photos(data)[:limit]:  # refuses the Kodak evaluation set
        rgb = _load(path)
        h, w = rgb.shape[:2]  # a 512x768 centre crop: the size the speed goal is about
        y0, x0 = max(0, h // 2 - 256), max(0, w // 2 - 384)
        out.append((path.stem, rgb[y0 : y0 + 512, x0 : x0 + 768].copy()))
    return out


def main() -> None:
    from rich.progress import track

    from compaction.renditions import LOSSY_ENCODERS
    from compaction.train import CACHE, DEFAULT_DATA

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=40, help="fit on the first N photos")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = _training_images(args.data, args.images)
    acts = np.array([activity(rgb) for _, rgb in images])
    CACHE.mkdir(parents=True, exist_ok=True)
    model: dict[str, Any] = {"grid": list(GRID)}
    for codec in LOSSY_ENCODERS:
        curves = []
        for stem, rgb in track(images, description=f"curves {codec}"):
            cached = CACHE / f"curve-{codec}-{stem}.npy"
            if not cached.exists():
                np.save(cached, _curve(rgb, codec))
            curves.append(np.load(cached))
        model[codec] = fit(np.array(curves), acts)
        print(codec, json.dumps(model[codec]), flush=True)
    MODEL_PATH.write_text(json.dumps(model, indent=1) + "\n")
    print(f"saved {MODEL_PATH}")


if __name__ == "__main__":
    main()
