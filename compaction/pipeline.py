"""The CPU-bound compaction steps (run in a worker thread by the job handler).

An image's compact-form search and its delivery-rendition searches are independent, so they run
side by side on two threads (the codecs and torch release the GIL), sharing one
``metrics.Reference`` of the original. The AVIF rendition is the compact form's AVIF base when
that meets the target on its own.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compaction import codec, metrics, renditions, restore, video
from compaction.ingest import Media
from compaction.quality import LOSSLESS, meets, target_ms_ssim

THREADS = 2  # the speed goal is about two CPU cores


def pixels_sha256(frames: list[np.ndarray]) -> str:
    """SHA-256 over the frames' RGB samples, each prefixed with its shape (unambiguous)."""
    digest = hashlib.sha256()
    for f in frames:
        digest.update(f"{f.shape[0]}x{f.shape[1]}x3:".encode())
        digest.update(np.ascontiguousarray(f, dtype=np.uint8).tobytes())
    return digest.hexdigest()


@dataclass
class Compacted:
    bitstream: bytes
    rendition: bytes
    rendition_format: str
    body: dict[str, Any]  # the certificate body (unsigned)
    timings: dict[str, float] = field(default_factory=dict)


def compact_media(
    media: Media, original: bytes, *, quality_target: float, preference: str, compact_id: str
) -> Compacted:
    """Compress, render for delivery, score and describe one asset."""
    if media.kind == "video":
        return _compact_video(media, original, quality_target, compact_id)
    return _compact_image(media, original, quality_target, preference, compact_id)


def _timed(timings: dict[str, float], name: str, fn: Any, *args: Any, **kw: Any) -> Any:
    t0 = time.perf_counter()
    try:
        return fn(*args, **kw)
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def _encode_image(
    rgb: np.ndarray, quality_target: float, preference: str, timings: dict[str, float]
) -> tuple[codec.Encoded, renditions.Rendition, metrics.Reference]:
    """The compact form and the delivery rendition, searched side by side."""
    ref = _timed(timings, "reference_s", metrics.Reference, rgb)
    formats = renditions.formats_for(preference, quality_target)
    reuse_avif = quality_target < LOSSLESS and "avif" in formats
    bound = renditions.SizeBound() if len(formats) > 1 else None
    with ThreadPoolExecutor(THREADS) as pool:
        compact = pool.submit(
            _timed,
            timings,
            "compact_s",
            codec.compress_image,
            rgb,
            quality_target,
            ref=ref,
            bound=bound,
        )
        searched = [
            pool.submit(
                _timed,
                timings,
                "renditions_s",
                renditions.candidate,
                rgb,
                f,
                quality_target,
                ref=ref,
                bound=bound,
            )
            for f in formats
            if not (reuse_avif and f == "avif")
        ]
        encoded = compact.result()
        candidates = [f.result() for f in searched]
    if reuse_avif:
        candidates.append(
            renditions.smallest_meeting(rgb, "avif", quality_target, ref=ref, found=encoded.avif)
        )
    if bound is not None:
        timings.update({f"encodes_{f}": float(n) for f, n in bound.encodes.items()})
    return encoded, renditions.smallest(candidates), ref


def _compact_image(
    media: Media, original: bytes, quality_target: float, preference: str, compact_id: str
) -> Compacted:
    t0 = time.perf_counter()
    rgb = media.frames[0]
    timings: dict[str, float] = {}
    with restore.torch_single_threaded():
        encoded, rendition, ref = _encode_image(rgb, quality_target, preference, timings)
        t1 = time.perf_counter()
        scores = ref.scores(encoded.decoded)
    exact = bool(np.array_equal(encoded.decoded, rgb))
    body = _body(
        compact_id,
        media,
        original,
        quality_target,
        bitstream=encoded.bitstream,
        decoded=[encoded.decoded],
        scores=scores,
        exact=exact,
        codec_info={
            "name": "cedg",
            "format_version": codec.parse_header(encoded.bitstream)["version"],
            "mode": encoded.mode,
            "base_layer": "avif-444" if encoded.mode == "lossy" else None,
            "base_quality": encoded.base_quality,
            "restoration": encoded.restored,
            "weights": codec.weights_versions(encoded.weights_id),
        },
        rendition={
            "format": rendition.format,
            "bytes": len(rendition.data),
            "setting": rendition.setting,
            "ms_ssim": rendition.ms_ssim,
            "psnr": rendition.psnr,
            "lossless": rendition.lossless,
            "sha256": hashlib.sha256(rendition.data).hexdigest(),
            "meets_target": meets(quality_target, rendition.ms_ssim, exact=rendition.lossless),
        },
    )
    timings.update(encoded.timings)
    timings["encode_wall_s"] = t1 - t0
    timings["scores_s"] = time.perf_counter() - t1
    timings["total_s"] = time.perf_counter() - t0
    return Compacted(encoded.bitstream, rendition.data, rendition.format, body, timings)


def _compact_video(
    media: Media, original: bytes, quality_target: float, compact_id: str
) -> Compacted:
    data, decoded, crf = video.compress_video(media.frames, media.fps, quality_target)
    scores: dict[str, Any] = video.scores(media.frames, decoded)
    scores["vmaf"] = video.vmaf(media.frames, decoded, media.fps)
    exact = crf is None and all(
        np.array_equal(a, b) for a, b in zip(video._crop(media.frames), decoded, strict=False)
    )
    fmt = "mkv" if crf is None else "mp4"
    body = _body(
        compact_id,
        media,
        original,
        quality_target,
        bitstream=data,
        decoded=decoded,
        scores=scores,
        exact=exact,
        codec_info={
            "name": "ffv1-rgb" if crf is None else "h264",
            "mode": "lossless" if crf is None else "lossy",
            "crf": crf,
            "weights": {},
        },
        rendition={
            "format": fmt,
            "bytes": len(data),
            "setting": crf,
            "ms_ssim": scores["ms_ssim"],
            "psnr": scores["psnr"],
            "lossless": exact,
            "sha256": hashlib.sha256(data).hexdigest(),
            "meets_target": meets(quality_target, scores["ms_ssim"], exact=exact),
        },
    )
    return Compacted(data, data, fmt, body)


def _body(
    compact_id: str,
    media: Media,
    original: bytes,
    quality_target: float,
    *,
    bitstream: bytes,
    decoded: list[np.ndarray],
    scores: dict[str, Any],
    exact: bool,
    codec_info: dict[str, Any],
    rendition: dict[str, Any],
) -> dict[str, Any]:
    lossless = quality_target >= LOSSLESS
    return {
        "certificate_version": 1,
        "compact_id": compact_id,
        "kind": media.kind,
        "source": {
            "container": media.container,
            "width": media.width,
            "height": media.height,
            "frames": len(media.frames),
            "notes": media.notes,
        },
        "quality_target": quality_target,
        "required": {"lossless": True}
        if lossless
        else {"ms_ssim": round(target_ms_ssim(quality_target), 6)},
        "codec": codec_info,
        "hashes": {
            "original_sha256": hashlib.sha256(original).hexdigest(),
            "original_pixels_sha256": pixels_sha256(
                media.frames if media.kind == "image" else video._crop(media.frames)
            ),
            "decoded_pixels_sha256": pixels_sha256(decoded),
            "bitstream_sha256": hashlib.sha256(bitstream).hexdigest(),
        },
        "sizes": {
            "original_bytes": len(original),
            "compact_bytes": len(bitstream),
            "rendition_bytes": rendition["bytes"],
            "compact_bpp": round(
                len(bitstream) * 8 / (media.width * media.height * len(media.frames)), 4
            ),
        },
        "scores": scores,
        "bit_exact": exact,
        "meets_target": meets(quality_target, float(scores.get("ms_ssim") or 0), exact=exact),
        "rendition": rendition,
    }
