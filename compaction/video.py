"""Video: the compact form is H.264 (libx264, CRF bisected to the quality target) or,
for quality_target 100, FFV1 in RGB (bgr0, lossless). Quality is scored per frame (PSNR, SSIM,
MS-SSIM) and with VMAF from the libvmaf-enabled ffmpeg inside ``imageio-ffmpeg`` when present.
"""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np

from compaction import metrics
from compaction.quality import LOSSLESS, target_ms_ssim


def encode_video(frames: list[np.ndarray], fps: float, *, crf: int | None) -> bytes:
    """Frames -> MP4/H.264 at ``crf``, or MKV/FFV1 RGB (lossless) when ``crf`` is None."""
    buf = io.BytesIO()
    h, w = frames[0].shape[:2]
    with av.open(buf, "w", format="matroska" if crf is None else "mp4") as box:
        if crf is None:
            stream = box.add_stream("ffv1", rate=round(fps) or 25)
            stream.pix_fmt = "bgr0"
        else:
            stream = box.add_stream(
                "libx264", rate=round(fps) or 25, options={"crf": str(crf), "preset": "medium"}
            )
            stream.pix_fmt = "yuv444p"
        stream.width, stream.height = w - w % 2, h - h % 2
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2]), format="rgb24"
            )
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
    return buf.getvalue()


def decode_video_bytes(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data), "r") as box:
        return [f.to_ndarray(format="rgb24") for f in box.decode(video=0)]


def _crop(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [f[: f.shape[0] - f.shape[0] % 2, : f.shape[1] - f.shape[1] % 2] for f in frames]


def scores(original: list[np.ndarray], decoded: list[np.ndarray]) -> dict[str, float | None]:
    """Mean per-frame PSNR / SSIM / MS-SSIM."""
    pairs = list(zip(_crop(original), decoded, strict=False))
    per = [metrics.image_scores(a, b) for a, b in pairs]
    psnrs = [p["psnr"] for p in per]
    return {
        "psnr": None
        if any(p is None for p in psnrs)
        else round(float(np.mean([float(p or 0) for p in psnrs])), 4),
        "ssim": round(float(np.mean([p["ssim"] for p in per])), 6),
        "ms_ssim": round(float(np.mean([p["ms_ssim"] for p in per])), 6),
    }


def compress_video(frames: list[np.ndarray], fps: float, quality_target: float):
    """(bitstream, decoded frames, crf or None): the largest CRF meeting the target."""
    if quality_target >= LOSSLESS:
        data = encode_video(frames, fps, crf=None)
        return data, decode_video_bytes(data), None
    target = target_ms_ssim(quality_target)
    lo, hi, best = 0, 51, None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = encode_video(frames, fps, crf=mid)
        decoded = decode_video_bytes(data)
        if scores(frames, decoded)["ms_ssim"] >= target:  # type: ignore[operator]
            best, lo = (data, decoded, mid), mid + 1
        else:
            hi = mid - 1
    if best is None:
        data = encode_video(frames, fps, crf=None)
        return data, decode_video_bytes(data), None
    return best


def vmaf(original: list[np.ndarray], decoded: list[np.ndarray], fps: float) -> float | None:
    """VMAF (mean) via imageio-ffmpeg's libvmaf; None where that ffmpeg is not installed."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        ref, dist, log = Path(tmp, "ref.mkv"), Path(tmp, "dist.mkv"), Path(tmp, "vmaf.json")
        ref.write_bytes(encode_video(_crop(original), fps, crf=None))
        dist.write_bytes(encode_video(decoded, fps, crf=None))
        cmd = [
            exe,
            "-loglevel",
            "error",
            "-i",
            str(dist),
            "-i",
            str(ref),
            "-lavfi",
            f"libvmaf=log_fmt=json:log_path={log}",
            "-f",
            "null",
            "-",
        ]
        result = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
        if result.returncode != 0 or not log.exists():
            return None
        pooled = json.loads(log.read_text())["pooled_metrics"]["vmaf"]["mean"]
        return round(float(pooled), 3)
