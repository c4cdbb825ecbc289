"""The CompactEdge bitstream (``.cedg``): a small header and one payload.

    magic "CEDG" | version u8 | mode u8 (0 lossy, 1 lossless v1, 2 lossless) | flags u8 (bit 0:
    restoration)
    | base quality u8 | height u32 | width u32 | payload

Lossy payload: an AVIF (AV1 intra 4:4:4) base layer; the decoder applies the learned, exactly
computed restoration network when flag bit 0 is set. Lossless payload: the context-mixing
bitstream of ``compaction.lossless`` (mode 2; mode 1 streams, written by the first lossless coder,
still decode through ``compaction.lossless_v1``). The bitstream, not a tensor, is what is stored.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from compaction import lossless, lossless_v1, metrics, restore
from compaction.base import avif_decode, avif_encode
from compaction.quality import LOSSLESS, target_ms_ssim
from models.errors import BadRequest

MAGIC = b"CEDG"
FORMAT_VERSION = 1
MODE_LOSSY, MODE_LOSSLESS_V1, MODE_LOSSLESS = 0, 1, 2
FLAG_RESTORE = 1
_HEAD = struct.Struct(">4sBBBBII")


class CorruptBitstream(BadRequest):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="BITSTREAM_CORRUPT")


@dataclass
class Encoded:
    bitstream: bytes
    decoded: np.ndarray
    mode: str
    base_quality: int | None
    restored: bool


def weights_versions() -> dict[str, str]:
    """Versions (content hashes) of the learned weights in force."""
    loaded = restore.load_restorer()
    return {
        "restore": loaded[1] if loaded else "none",
        "lossless": lossless.VERSION,
    }


def _pack(mode: int, flags: int, quality: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return _HEAD.pack(MAGIC, FORMAT_VERSION, mode, flags, quality, shape[0], shape[1]) + payload


def encode_lossless(rgb: np.ndarray) -> Encoded:
    """Bit-exact compact form."""
    data = _pack(MODE_LOSSLESS, 0, LOSSLESS, rgb.shape, lossless.encode(rgb))
    return Encoded(data, rgb, "lossless", None, False)


def encode_lossy(rgb: np.ndarray, base_quality: int) -> Encoded:
    """Lossy compact form at one base quality; restoration kept only where it measurably helps."""
    payload = avif_encode(rgb, base_quality)
    base = avif_decode(payload)
    restored = restore.restore(base, base_quality)
    use = metrics.psnr(rgb, restored) > metrics.psnr(rgb, base)
    flags = FLAG_RESTORE if use else 0
    data = _pack(MODE_LOSSY, flags, base_quality, rgb.shape, payload)
    return Encoded(data, restored if use else base, "lossy", base_quality, use)


def compress_image(rgb: np.ndarray, quality_target: float) -> Encoded:
    """The smallest compact form that meets the quality target (100 = lossless)."""
    if quality_target >= LOSSLESS:
        return encode_lossless(rgb)
    target = target_ms_ssim(quality_target)
    lo, hi = 1, 100
    best: Encoded | None = None
    while lo <= hi:  # bisection on the base quality: MS-SSIM grows with it
        mid = (lo + hi) // 2
        candidate = encode_lossy(rgb, mid)
        if metrics.ms_ssim(rgb, candidate.decoded) >= target:
            best, hi = candidate, mid - 1
        else:
            lo = mid + 1
    return best or encode_lossless(rgb)


def parse_header(bitstream: bytes) -> dict[str, int]:
    """The header fields; a bitstream that is not ours is rejected."""
    if len(bitstream) < _HEAD.size:
        raise CorruptBitstream("bitstream is truncated")
    magic, version, mode, flags, quality, h, w = _HEAD.unpack_from(bitstream)
    if magic != MAGIC or version != FORMAT_VERSION or mode not in _DECODERS:
        raise CorruptBitstream("not a CompactEdge v1 bitstream")
    return {"mode": mode, "flags": flags, "quality": quality, "height": h, "width": w}


def _decode_lossy(payload: bytes, head: dict[str, int]) -> np.ndarray:
    rgb = avif_decode(payload)
    return restore.restore(rgb, head["quality"]) if head["flags"] & FLAG_RESTORE else rgb


_DECODERS: dict[int, Callable[[bytes, dict[str, int]], np.ndarray]] = {
    MODE_LOSSY: _decode_lossy,
    MODE_LOSSLESS_V1: lambda payload, _head: lossless_v1.decode(payload),
    MODE_LOSSLESS: lambda payload, head: lossless.decode(payload, (head["height"], head["width"])),
}


def decompress_image(bitstream: bytes) -> np.ndarray:
    """Decode a compact form back to HxWx3 uint8 pixels."""
    head = parse_header(bitstream)
    payload = bitstream[_HEAD.size :]
    try:
        rgb = _DECODERS[head["mode"]](payload, head)
    except (ValueError, OSError, RuntimeError, AssertionError, struct.error) as exc:
        raise CorruptBitstream(f"bitstream does not decode: {exc}") from exc
    if rgb.shape[:2] != (head["height"], head["width"]):
        raise CorruptBitstream("decoded size does not match the header")
    return rgb
