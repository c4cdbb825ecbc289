"""Ingest: fetch an asset (SSRF-guarded, size-capped), sniff what it is, decode it to sRGB.

The extension and the served Content-Type are never trusted: the first bytes decide. Images are
decoded with Pillow (ICC profiles converted to sRGB, alpha dropped, 16-bit reduced to 8-bit),
video with PyAV.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import av
import numpy as np
from PIL import Image, ImageCms

from models.errors import BadRequest, PayloadTooLarge, UpstreamError

MAX_BYTES = 50_000_000
MAX_PIXELS = 40_000_000
MAX_VIDEO_FRAMES = 300
MAX_VIDEO_PIXELS = 1920 * 1080
IMAGE_KINDS = {"png", "jpeg", "gif", "webp", "avif", "jxl", "bmp", "tiff"}
VIDEO_KINDS = {"mp4", "webm", "avi"}


@dataclass
class Media:
    kind: str  # "image" or "video"
    container: str  # sniffed format, e.g. "png", "mp4"
    frames: list[np.ndarray]  # HxWx3 uint8 sRGB
    fps: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.frames[0].shape[0])

    @property
    def width(self) -> int:
        return int(self.frames[0].shape[1])


async def fetch(url: str) -> bytes:
    """GET ``url`` through the SSRF guard (redirects re-checked), capped at MAX_BYTES."""
    from tools.ssrf import guarded_request

    response = await guarded_request("GET", url, max_bytes=MAX_BYTES, max_redirects=3)
    if response.status_code != 200:
        raise UpstreamError(f"asset_url answered HTTP {response.status_code}", code="FETCH_FAILED")
    return bytes(response.content)


def sniff(data: bytes) -> str:
    """The media format the bytes actually are; raises NOT_MEDIA / UNSUPPORTED_FORMAT."""
    head = data[:32]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "avif" if brand in (b"avif", b"avis") else "mp4"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "jxl"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith((b"%PDF", b"PK\x03\x04", b"\x7fELF", b"OggS", b"ID3", b"fLaC")):
        raise BadRequest(
            "asset is a file type CompactEdge does not support",
            fields=["asset_url"],
            code="UNSUPPORTED_FORMAT",
        )
    raise BadRequest("asset is not an image or video", fields=["asset_url"], code="NOT_MEDIA")


def _corrupt(exc: Exception | str) -> BadRequest:
    return BadRequest(
        f"asset could not be decoded: {exc}", fields=["asset_url"], code="CORRUPT_MEDIA"
    )


def _to_srgb(im: Image.Image, notes: list[str]) -> np.ndarray:
    icc = im.info.get("icc_profile")
    if im.mode in ("I;16", "I;16B", "I", "F"):
        im = im.point(lambda v: v / 256).convert("L") if im.mode != "F" else im.convert("L")
        notes.append("high bit depth reduced to 8 bits")
    if "A" in im.getbands() or (im.mode == "P" and "transparency" in im.info):
        notes.append("alpha channel dropped")
    rgb = im.convert("RGB")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            if "srgb" not in (ImageCms.getProfileDescription(src) or "").lower():
                converted = ImageCms.profileToProfile(rgb, src, ImageCms.createProfile("sRGB"))
                rgb = converted if converted is not None else rgb
                notes.append("converted from embedded ICC profile to sRGB")
        except (ImageCms.PyCMSError, OSError):
            notes.append("unreadable ICC profile ignored")
    return np.asarray(rgb).copy()


def decode_image(data: bytes, container: str) -> Media:
    notes: list[str] = []
    try:
        if container == "jxl":
            import imagecodecs

            arr = np.asarray(imagecodecs.jpegxl_decode(data))
            im = Image.fromarray(arr if arr.dtype == np.uint8 else (arr // 256).astype(np.uint8))
        else:
            im = Image.open(io.BytesIO(data))
        if im.width * im.height > MAX_PIXELS:
            raise PayloadTooLarge(
                f"image has {im.width}x{im.height} pixels, over the {MAX_PIXELS} pixel limit",
                code="ASSET_TOO_LARGE",
            )
        im.load()
        if getattr(im, "n_frames", 1) > 1:
            notes.append("animated image: first frame only")
        frame = _to_srgb(im, notes)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise _corrupt(exc) from exc
    return Media("image", container, [frame], notes=notes)


def decode_video(data: bytes, container: str) -> Media:
    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), "r") as box:
            if not box.streams.video:
                raise BadRequest(
                    "file has no video stream", fields=["asset_url"], code="UNSUPPORTED_FORMAT"
                )
            stream = box.streams.video[0]
            fps = float(stream.average_rate or 25)
            for frame in box.decode(stream):
                if frame.width * frame.height > MAX_VIDEO_PIXELS:
                    raise PayloadTooLarge(
                        "video frames are larger than 1920x1080", code="ASSET_TOO_LARGE"
                    )
                if len(frames) >= MAX_VIDEO_FRAMES:
                    raise PayloadTooLarge(
                        f"video has more than {MAX_VIDEO_FRAMES} frames", code="ASSET_TOO_LARGE"
                    )
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.FFmpegError as exc:
        raise _corrupt(exc) from exc
    if not frames:
        raise _corrupt("no decodable frames")
    return Media("video", container, frames, fps=fps)


def decode_media(data: bytes) -> Media:
    """Sniff and decode bytes into frames; every bad input is a clear BadRequest/413."""
    if len(data) > MAX_BYTES:
        raise PayloadTooLarge(f"asset is larger than {MAX_BYTES} bytes", code="ASSET_TOO_LARGE")
    if not data:
        raise BadRequest("asset is empty", fields=["asset_url"], code="NOT_MEDIA")
    container = sniff(data)
    if container in VIDEO_KINDS:
        return decode_video(data, container)
    return decode_image(data, container)
