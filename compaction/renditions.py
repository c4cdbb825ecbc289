"""Delivery renditions: browsers cannot decode ``.cedg``, so each asset also gets a standard file.

For the preferred format the encoder setting is searched (``compaction.search``, started by
``compaction.predictor``) for the smallest file whose measured MS-SSIM meets the quality target
(``compaction.quality``); ``auto`` does this for JPEG, WebP, AVIF and JPEG XL and keeps the
smallest. AVIF is the compact form's own base-layer encoder (4:4:4, speed 6), so when the base
meets the target on its own it is delivered as is, without a second search. ``quality_target``
100 gives lossless renditions (PNG, WebP lossless, AVIF lossless, JPEG XL lossless); JPEG cannot
be lossless.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image

from compaction import metrics, predictor, search
from compaction.base import avif_encode
from compaction.formats import MEDIA_TYPES, PREFERENCES  # noqa: F401 (re-exported)
from compaction.quality import LOSSLESS, target_ms_ssim
from compaction.search import Measured, Result
from models.errors import BadRequest

FORMATS = ("webp", "avif", "jpeg", "png", "jxl")
# In the order ``auto`` searches them beside the compact form's AVIF search: the cheap JPEG last,
# when a winner's size is most likely known and it is settled in one or two encodes.
AUTO_FORMATS = ("webp", "jxl", "avif", "jpeg")
PROBE_BELOW = 2


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


def decode(data: bytes, fmt: str) -> np.ndarray:
    """A rendition file back to HxWx3 uint8."""
    if fmt == "jxl":
        return np.asarray(imagecodecs.jpegxl_decode(data))[..., :3]
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).copy()


LOSSY_ENCODERS: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "jpeg": lambda a, q: _pillow(a, "JPEG", quality=q, optimize=True),
    "webp": lambda a, q: _pillow(a, "WEBP", quality=q, method=4),
    # the compact form's base layer encoder, so a base that meets the target is reused as is
    "avif": lambda a, q: avif_encode(a, q),
    # distance 0.1..~12 mapped from a 1..100 "quality" so that higher means better
    "jxl": lambda a, q: bytes(imagecodecs.jpegxl_encode(a, distance=(101 - q) / 8.0, effort=5)),
}
_LOSSLESS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png": lambda a: _pillow(a, "PNG", optimize=True),
    "webp": lambda a: _pillow(a, "WEBP", lossless=True, quality=100, method=4),
    "avif": lambda a: bytes(imagecodecs.avif_encode(a, level=100)),
    "jxl": lambda a: bytes(imagecodecs.jpegxl_encode(a, lossless=True, effort=7)),
}


def _rendition(ref: metrics.Reference, fmt: str, found: Measured) -> Rendition:
    """A measured candidate as a rendition, with its certificate scores."""
    exact = bool(np.array_equal(found.decoded, ref.original))
    scores = ref.scores(found.decoded)
    return Rendition(
        fmt, found.data, found.setting, float(scores["ms_ssim"] or 0), scores["psnr"], exact
    )


def _lossless(ref: metrics.Reference, fmt: str) -> Rendition:
    data = _LOSSLESS[fmt](ref.original)
    rendition = _rendition(ref, fmt, Measured(0, data, decode(data, fmt), 1.0))
    rendition.setting = None
    return rendition


def _reused(fmt: str, avif: Measured | None) -> Measured | None:
    return avif if fmt == "avif" else None


def measure_setting(ref: metrics.Reference, fmt: str, setting: int) -> Measured:
    """Encode the original with ``fmt`` at ``setting``, decode it and measure its MS-SSIM."""
    data = LOSSY_ENCODERS[fmt](ref.original, setting)
    decoded = decode(data, fmt)
    return Measured(setting, data, decoded, ref.ms_ssim(decoded))


class SizeBound:
    """The size of the smallest file known to meet the target, shared by ``auto``'s searches.

    File size grows with the encoder setting, so once a candidate that *misses* the target is
    already at least this large, nothing of that format that meets it can be smaller: that
    format's search stops (``beaten``). Thread-safe: the searches run side by side."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes = math.inf
        self.encodes: dict[str, int] = {}  # candidates measured per format (for timings)

    def offer(self, fmt: str, candidate: Measured, need: float) -> None:
        with self._lock:
            self.encodes[fmt] = self.encodes.get(fmt, 0) + 1
            if candidate.ms_ssim >= need:
                self.bytes = min(self.bytes, len(candidate.data))

    def beaten(self, candidate: Measured) -> bool:
        return len(candidate.data) >= self.bytes


def search_format(
    ref: metrics.Reference,
    fmt: str,
    need: float,
    *,
    bound: SizeBound | None = None,
    may_give_up: bool = False,
) -> Result:
    """The predictor-guided search of ``fmt``'s setting for MS-SSIM >= ``need``; every
    candidate that meets is offered to ``bound``, and with ``may_give_up`` the search stops
    once ``bound`` shows this format cannot give the smallest file. While every candidate so
    far is larger than a known winner, probes go PROBE_BELOW steps under the prediction: a
    candidate that misses yet is larger than the winner settles a losing format."""
    guided = predictor.estimator(fmt, need, predictor.activity(ref.original))

    def estimate(tried: dict[int, Measured]) -> float:
        losing = bound is not None and all(bound.beaten(c) for c in tried.values())
        return guided(tried) - (PROBE_BELOW if may_give_up and losing else 0)

    def measure(q: int) -> Measured:
        candidate = measure_setting(ref, fmt, q)
        if bound is not None:
            bound.offer(fmt, candidate, need)
        return candidate

    give_up = bound.beaten if bound is not None and may_give_up else None
    return search.smallest_meeting(measure, need, estimate, give_up)


def smallest_meeting(
    rgb: np.ndarray,
    fmt: str,
    quality_target: float,
    *,
    ref: metrics.Reference | None = None,
    found: Measured | None = None,
) -> Rendition:
    """The smallest rendition of ``fmt`` that meets the quality target; ``found`` is a
    candidate already searched and measured elsewhere (the compact form's AVIF base)."""
    rendition = candidate(rgb, fmt, quality_target, ref=ref, found=found)
    assert rendition is not None  # only a search with a bound gives up
    return rendition


def candidate(
    rgb: np.ndarray,
    fmt: str,
    quality_target: float,
    *,
    ref: metrics.Reference | None = None,
    found: Measured | None = None,
    bound: SizeBound | None = None,
) -> Rendition | None:
    """``smallest_meeting``, or None once ``bound`` shows ``fmt`` cannot be the smallest."""
    ref = ref or metrics.Reference(rgb)
    if quality_target >= LOSSLESS or fmt == "png":
        if fmt not in _LOSSLESS:
            raise BadRequest(
                "JPEG cannot be lossless: choose another format for quality_target 100",
                fields=["format_preference"],
                code="FORMAT_CANNOT_BE_LOSSLESS",
            )
        return _lossless(ref, fmt)
    if found is None:
        result = search_format(
            ref, fmt, target_ms_ssim(quality_target), bound=bound, may_give_up=True
        )
        if result.abandoned:
            return None
        found = result.best
    if found is None:  # even the top setting misses: fall back to lossless where possible
        if fmt in _LOSSLESS:
            return _lossless(ref, fmt)
        found = measure_setting(ref, fmt, search.HI)
    return _rendition(ref, fmt, found)


def formats_for(preference: str, quality_target: float) -> tuple[str, ...]:
    """The formats a preference considers (``auto``: all of them, lossless ones for 100)."""
    if preference != "auto":
        return (preference,)
    return ("png", "webp", "avif", "jxl") if quality_target >= LOSSLESS else AUTO_FORMATS


def smallest(candidates: list[Rendition | None]) -> Rendition:
    """The rendition to deliver among candidates that each meet the target: the fewest bytes
    (None: a format whose search stopped because it could not win)."""
    return min((c for c in candidates if c is not None), key=lambda r: len(r.data))


def delivery_rendition(
    rgb: np.ndarray,
    preference: str,
    quality_target: float,
    *,
    ref: metrics.Reference | None = None,
    avif: Measured | None = None,
) -> Rendition:
    """The rendition to deliver: the preferred format, or the smallest of all for ``auto``.

    ``avif``: the compact form's AVIF base when it meets the target on its own (it is the
    smallest AVIF of that encoder that does), used instead of searching AVIF again."""
    ref = ref or metrics.Reference(rgb)
    bound = SizeBound()
    if avif is not None:
        bound.offer("avif", avif, target_ms_ssim(quality_target))
    return smallest(
        [
            candidate(rgb, f, quality_target, ref=ref, found=_reused(f, avif), bound=bound)
            for f in formats_for(preference, quality_target)
        ]
    )
