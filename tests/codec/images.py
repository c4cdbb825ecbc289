"""Small synthetic test images (no shared data needed): smooth shading, edges, texture, noise."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def synthetic(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack(
        [
            120 + 80 * np.sin(x / (7 + seed)) * np.cos(y / 11),
            100 + 60 * (x / w) + 40 * np.sin((x + y) / 9),
            90 + 70 * (y / h) + 20 * np.cos(x / 5),
        ],
        axis=-1,
    )
    base[(x - w / 2) ** 2 + (y - h / 2) ** 2 < (min(h, w) / 4) ** 2] += 50  # a hard edge
    base += rng.normal(0, 4, base.shape)
    return np.clip(np.round(base), 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()
