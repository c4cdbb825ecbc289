"""The Edge Mobility Score (0-100): how well an asset travels to the edge and the browser.

    score = 0.35 * size + 0.30 * quality + 0.25 * delivery + 0.10 * cacheability

- size: 100 x (1 - delivered bytes / original bytes), floored at 0.
- quality: 100 for a lossless rendition, else 100 x (MS-SSIM - 0.8) / 0.2, clipped to 0-100.
- delivery: mean over the network profiles below of an estimated first-byte-to-done time
  t = 2 x RTT + bytes x 8 / bandwidth, scored 100 at <= 0.1 s and 0 at >= 5 s (log scale).
- cacheability: the rendition is immutable and content-addressed (SHA-256 ETag); formats score
  by browser support: JPEG/PNG/WebP 100, AVIF 90, JPEG XL 50, video MP4 90.
"""

from __future__ import annotations

import math
from typing import Any

PROFILES = {  # name: (bandwidth bits/s, round-trip time s)
    "3g": (1.6e6, 0.300),
    "4g": (12e6, 0.070),
    "broadband": (50e6, 0.020),
}
CACHEABILITY = {"jpeg": 100, "png": 100, "webp": 100, "avif": 90, "jxl": 50, "mp4": 90, "mkv": 40}
WEIGHTS = {"size": 0.35, "quality": 0.30, "delivery": 0.25, "cacheability": 0.10}


def _time_score(seconds: float) -> float:
    lo, hi = math.log(0.1), math.log(5.0)
    return 100.0 * min(1.0, max(0.0, (hi - math.log(max(seconds, 1e-6))) / (hi - lo)))


def mobility_score(
    *, original_bytes: int, delivered_bytes: int, ms_ssim: float, lossless: bool, fmt: str
) -> dict[str, Any]:
    """The composite and every component that went into it."""
    times = {name: 2 * rtt + delivered_bytes * 8 / bw for name, (bw, rtt) in PROFILES.items()}
    components = {
        "size": max(0.0, 100.0 * (1 - delivered_bytes / max(original_bytes, 1))),
        "quality": 100.0 if lossless else min(100.0, max(0.0, 100 * (ms_ssim - 0.8) / 0.2)),
        "delivery": sum(_time_score(t) for t in times.values()) / len(times),
        "cacheability": float(CACHEABILITY.get(fmt, 50)),
    }
    score = sum(WEIGHTS[k] * v for k, v in components.items())
    return {
        "score": round(score, 1),
        "components": {k: round(v, 1) for k, v in components.items()},
        "weights": WEIGHTS,
        "delivery_seconds": {k: round(v, 3) for k, v in times.items()},
    }
