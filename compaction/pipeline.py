"""The CPU-bound compaction steps (run in a worker thread by the job handler)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compaction import codec, metrics, renditions, video
from compaction.ingest import Media
from compaction.quality import LOSSLESS, meets, target_ms_ssim


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
    t0 = time.perf_counter()
    if media.kind == "video":
        return _compact_video(media, original, quality_target, compact_id)
    rgb = media.frames[0]
    encoded = codec.compress_image(rgb, quality_target)
    t1 = time.perf_counter()
    rendition = renditions.delivery_rendition(rgb, preference, quality_target)
    t2 = time.perf_counter()
    exact = bool(np.array_equal(encoded.decoded, rgb))
    scores = metrics.image_scores(rgb, encoded.decoded)
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
            "format_version": codec.FORMAT_VERSION,
            "mode": encoded.mode,
            "base_layer": "avif-444" if encoded.mode == "lossy" else None,
            "base_quality": encoded.base_quality,
            "restoration": encoded.restored,
            "weights": codec.weights_versions(),
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
    timings = {"compact_s": t1 - t0, "rendition_s": t2 - t1, "total_s": time.perf_counter() - t0}
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
