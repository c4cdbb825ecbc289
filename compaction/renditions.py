"""Delivery renditions: browsers cannot decode ``.cedg``, so each asset also gets a standard file.

For the preferred format the encoder parameter is bisected to the smallest file whose measured
MS-SSIM meets the quality target (``compaction.quality``); ``auto`` does this for JPEG, WebP,
AVIF and JPEG XL and keeps the smallest. ``quality_target`` 100 gives lossless renditions
(PNG, WebP lossless, AVIF lossless, JPEG XL lossless); JPEG cannot be lossless.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image

from compaction import metrics
from compaction.formats import MEDIA_TYPES, PREFERENCES  # noqa: F401 (re-exported)
from compaction.quality import LOSSLESS, target_ms_ssim
from models.errors import BadRequest

FORMATS = ("webp", "avif", "jpeg", "png", "jxl")
AUTO_FORMATS = ("jpeg", "webp", "avif", "jxl")


@dataclass
class Rendition:
    format: str
    data: bytes
    setting: int | None
    ms_ssim: float
    psnr: float | None
    lossless: bool


def _pillow(rgb: np.ndarray, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **params)
    return buf.getvalue()


def _decode(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "jxl":
        return np.asarray(imagecodecs.jpegxl_decode(data))[..., :3]
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).copy()


_LOSSY: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "jpeg": lambda a, q: _pillow(a, "JPEG", quality=q, optimize=True),
    "webp": lambda a, q: _pillow(a, "WEBP", quality=q, method=4),
    "avif": lambda a, q: _pillow(a, "AVIF", quality=q, speed=8, subsampling="4:4:4"),
    # distance 0.1..~12 mapped from a 1..100 "quality" so that higher means better
    "jxl": lambda a, q: bytes(imagecodecs.jpegxl_encode(a, distance=(101 - q) / 8.0, effort=5)),
}
_LOSSLESS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png": lambda a: _pillow(a, "PNG", optimize=True),
    "webp": lambda a: _pillow(a, "WEBP", lossless=True, quality=100, method=4),
    "avif": lambda a: bytes(imagecodecs.avif_encode(a, level=100)),
    "jxl": lambda a: bytes(imagecodecs.jpegxl_encode(a, lossless=True, effort=7)),
}


def _measured(rgb: np.ndarray, fmt: str, data: bytes, setting: int | None) -> Rendition:
    decoded = _decode(data, fmt)
    exact = bool(np.array_equal(decoded, rgb))
    scores = metrics.image_scores(rgb, decoded)
    return Rendition(fmt, data, setting, float(scores["ms_ssim"] or 0), scores["psnr"], exact)


def smallest_meeting(rgb: np.ndarray, fmt: str, quality_target: float) -> Rendition:
    """The smallest rendition of ``fmt`` that meets the quality target."""
    if quality_target >= LOSSLESS or fmt == "png":
        if fmt not in _LOSSLESS:
            raise BadRequest(
                "JPEG cannot be lossless: choose another format for quality_target 100",
                fields=["format_preference"],
                code="FORMAT_CANNOT_BE_LOSSLESS",
            )
        return _measured(rgb, fmt, _LOSSLESS[fmt](rgb), None)
    target = target_ms_ssim(quality_target)
    lo, hi, best = 1, 100, None
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = _measured(rgb, fmt, _LOSSY[fmt](rgb, mid), mid)
        if candidate.lossless or candidate.ms_ssim >= target:
            best, hi = candidate, mid - 1
        else:
            lo = mid + 1
    if best is None:  # even the top setting misses: fall back to lossless where possible
        return _measured(rgb, fmt, _LOSSLESS[fmt](rgb), None) if fmt in _LOSSLESS else candidate
    return best


def delivery_rendition(rgb: np.ndarray, preference: str, quality_target: float) -> Rendition:
    """The rendition to deliver: the preferred format, or the smallest of all for ``auto``."""
    if preference != "auto":
        return smallest_meeting(rgb, preference, quality_target)
    pool = ("png", "webp", "avif", "jxl") if quality_target >= LOSSLESS else AUTO_FORMATS
    return min((smallest_meeting(rgb, f, quality_target) for f in pool), key=lambda r: len(r.data))
