"""A fitted predictor of the encoder setting that just meets an MS-SSIM target, per codec.

The quality search (``compaction.search``) always measures; this only decides where it starts
and how far it steps, so a poor prediction costs encodes, never quality. Model, per codec:

    setting ~= w0 + w1 * T + w2 * A + w3 * T * A        (T = target in MS-SSIM dB,
                                                         A = log mean luma gradient)
    slope   = median dB per setting step near the answer

fitted by least squares on the training photos (never Kodak):

    python -m compaction.predictor [--data DIR] [--images N]

writes ``compaction/weights/predictor.json``.
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

from compaction.search import db

MODEL_PATH = Path(__file__).parent / "weights" / "predictor.json"
GRID = (5, 10, 20, 30, 40, 50, 60, 70, 80, 85, 90, 95, 100)
FIT_TARGETS = (20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95)
# Used before predictor.json exists (or for a codec it lacks): a mid start, a typical slope.
FALLBACK = {"w": [50.0, 0.0, 0.0, 0.0], "slope": 0.15}


def activity(rgb: np.ndarray) -> float:
    """log of the mean absolute luma gradient: busy images need higher settings."""
    y = rgb[::2, ::2].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grad = np.abs(np.diff(y, axis=0)).mean() + np.abs(np.diff(y, axis=1)).mean()
    return math.log(float(grad) + 1.0)


@lru_cache(maxsize=1)
def _model() -> dict[str, Any]:
    return json.loads(MODEL_PATH.read_text()) if MODEL_PATH.exists() else {}


def predict(codec: str, need: float, act: float) -> tuple[float, float]:
    """(predicted setting, dB per step) for reaching MS-SSIM ``need`` with ``codec``."""
    m = _model().get(codec, FALLBACK)
    t = db(need)
    w = m["w"]
    return w[0] + w[1] * t + w[2] * act + w[3] * t * act, float(m["slope"])


# --- fitting ---------------------------------------------------------------------------------


def _curve(rgb: np.ndarray, codec: str) -> np.ndarray:
    """MS-SSIM dB at every GRID setting (made non-decreasing, as the search assumes)."""
    from compaction import metrics, renditions

    ref = metrics.Reference(rgb)
    enc = renditions.LOSSY_ENCODERS[codec]
    values = [db(ref.ms_ssim(renditions.decode(enc(rgb, q), codec))) for q in GRID]
    return np.maximum.accumulate(np.array(values))


def _rows(curve: np.ndarray, act: float) -> list[tuple[float, float, float, float]]:
    """(target dB, activity, answer setting, local slope) for every fit target in range."""
    from compaction.quality import target_ms_ssim

    out = []
    for qt in FIT_TARGETS:
        t = db(target_ms_ssim(qt))
        if not curve[0] <= t <= curve[-1]:
            continue
        i = max(1, int(np.searchsorted(curve, t)))
        span = max(curve[i] - curve[i - 1], 1e-6)
        answer = GRID[i - 1] + (t - curve[i - 1]) / span * (GRID[i] - GRID[i - 1])
        out.append((t, act, answer, span / (GRID[i] - GRID[i - 1])))
    return out


def fit(images: list[np.ndarray], codecs: list[str]) -> dict[str, Any]:
    from rich.progress import track

    model: dict[str, Any] = {}
    for codec in codecs:
        rows: list[tuple[float, float, float, float]] = []
        for rgb in track(images, description=f"predictor {codec}"):
            rows += _rows(_curve(rgb, codec), activity(rgb))
        r = np.array(rows)
        x = np.stack([np.ones(len(r)), r[:, 0], r[:, 1], r[:, 0] * r[:, 1]], axis=1)
        w, *_ = np.linalg.lstsq(x, r[:, 2], rcond=None)
        err = x @ w - r[:, 2]
        model[codec] = {
            "w": [round(float(v), 6) for v in w],
            "slope": round(float(np.median(r[:, 3])), 5),
            "fit_rows": len(r),
            "mean_abs_error_steps": round(float(np.mean(np.abs(err))), 2),
        }
        print(codec, model[codec], flush=True)
    return model


def main() -> None:
    from compaction.renditions import LOSSY_ENCODERS
    from compaction.train import DEFAULT_DATA, _load, _photos

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=40, help="fit on the first N photos")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = []
    for path in _photos(args.data)[: args.images]:  # refuses the Kodak evaluation set
        rgb = _load(path)
        h, w = rgb.shape[:2]  # a 512x768 centre crop: the size the speed goal is about
        y0, x0 = max(0, h // 2 - 256), max(0, w // 2 - 384)
        images.append(rgb[y0 : y0 + 512, x0 : x0 + 768].copy())
    model = fit(images, list(LOSSY_ENCODERS))
    MODEL_PATH.write_text(json.dumps(model, indent=2) + "\n")
    print(f"saved {MODEL_PATH}")


if __name__ == "__main__":
    main()
