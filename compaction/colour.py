"""The reversible YCoCg-R colour transform used by the lossless coders.

Integer lifting steps, so RGB -> YCoCg-R -> RGB is exact for every 8-bit triple. Y stays in
0..255; Co and Cg span -255..255.
"""

from __future__ import annotations

import numpy as np


def to_ycocg(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW int64 YCoCg-R."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    co = r - b
    t = b + (co >> 1)
    cg = g - t
    y = t + (cg >> 1)
    return np.stack([y, co, cg])


def from_ycocg(planes: np.ndarray) -> np.ndarray:
    """3xHxW YCoCg-R -> HxWx3 uint8 RGB (the exact inverse of ``to_ycocg``)."""
    y, co, cg = planes
    t = y - (cg >> 1)
    g = cg + t
    b = t - (co >> 1)
    r = b + co
    return np.stack([r, g, b], axis=-1).astype(np.uint8)
