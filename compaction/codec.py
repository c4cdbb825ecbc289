"""The CompactEdge bitstream (``.cedg``): a small header and one payload.

    magic "CEDG" | version u8 | mode u8 (0 lossy, 1 lossless v1, 2 lossless) | flags u8 (bit 0:
    restoration) | base quality u8 | height u32 | width u32 | [version 2: restoration weights id
    u8] | payload

Lossy payload: an AVIF (AV1 intra 4:4:4) base layer; the decoder applies the learned, exactly
computed restoration network when flag bit 0 is set: version 2 names its weights
(``restore.SPECS``), version 1 streams were all made with weights id 1 (``restore_v1.pt``, kept
for them forever). Lossy streams are written as version 2; lossless streams, which use no
restoration weights, are still written as version 1. Lossless payload: the context-mixing
bitstream of ``compaction.lossless`` (mode 2; mode 1 streams, written by the first lossless coder,
still decode through ``compaction.lossless_v1``). The bitstream, not a tensor, is what is stored.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from compaction import lossless, lossless_v1, metrics, renditions, restore
from compaction.base import avif_decode, avif_encode
from compaction.quality import LOSSLESS, target_ms_ssim
from compaction.search import Measured, db
from models.errors import BadRequest

MAGIC = b"CEDG"
FORMAT_VERSION = 2  # what lossy streams are written as
VERSION_PLAIN, VERSION_WEIGHTS_ID = 1, 2  # v2 = v1 header + restoration weights id byte
MODE_LOSSY, MODE_LOSSLESS_V1, MODE_LOSSLESS = 0, 1, 2
FLAG_RESTORE = 1
_HEAD = struct.Struct(">4sBBBBII")
# Restoration is also tried on the setting just below the search's answer (which missed the
# target on its base alone) when it missed by less than this many MS-SSIM dB. Measured for
# weights id 2 on 48 training crops (``python -m compaction.train restore --minutes 0`` prints
# it): the restoration adds -0.03 / +0.05 / +0.19 MS-SSIM dB at p10 / p50 / p90.
RESTORE_REACH_DB = 0.1


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
    weights_id: int | None = None  # the restoration weights the stream names (lossy)
    avif: Measured | None = None  # the searched AVIF base that meets the target on its own
    timings: dict[str, float] = field(default_factory=dict)  # seconds per encoder stage


def weights_versions(weights_id: int | None = restore.DEFAULT_ID) -> dict[str, str]:
    """Versions (content hashes) of the learned weights a stream uses."""
    loaded = restore.load_restorer(weights_id) if weights_id is not None else None
    return {
        "restore": loaded[1] if loaded else "none",
        "lossless": lossless.VERSION,
    }


def _pack(
    mode: int,
    flags: int,
    quality: int,
    shape: tuple[int, ...],
    payload: bytes,
    weights_id: int | None = None,
) -> bytes:
    """Header + payload; version 2 (with the weights id byte) when ``weights_id`` is given."""
    version = VERSION_PLAIN if weights_id is None else VERSION_WEIGHTS_ID
    head = _HEAD.pack(MAGIC, version, mode, flags, quality, shape[0], shape[1])
    return head + (b"" if weights_id is None else bytes([weights_id])) + payload


def encode_lossless(rgb: np.ndarray) -> Encoded:
    """Bit-exact compact form."""
    data = _pack(MODE_LOSSLESS, 0, LOSSLESS, rgb.shape, lossless.encode(rgb))
    return Encoded(data, rgb, "lossless", None, False)


def _restored(rgb: np.ndarray, base: Measured, weights_id: int) -> np.ndarray | None:
    """The restored base when the restoration measurably raises PSNR, else None."""
    out = restore.restore(base.decoded, base.setting, weights_id)
    return out if metrics.psnr(rgb, out) > metrics.psnr(rgb, base.decoded) else None


def _lossy(
    rgb: np.ndarray, base: Measured, restored: np.ndarray | None, weights_id: int
) -> Encoded:
    flags = FLAG_RESTORE if restored is not None else 0
    data = _pack(MODE_LOSSY, flags, base.setting, rgb.shape, base.data, weights_id)
    decoded = restored if restored is not None else base.decoded
    return Encoded(data, decoded, "lossy", base.setting, restored is not None, weights_id)


def encode_lossy(
    rgb: np.ndarray, base_quality: int, *, weights_id: int = restore.DEFAULT_ID
) -> Encoded:
    """Lossy compact form at one base quality; restoration kept only where it measurably helps."""
    data = avif_encode(rgb, base_quality)
    base = Measured(base_quality, data, avif_decode(data), float("nan"))
    return _lossy(rgb, base, _restored(rgb, base, weights_id), weights_id)


def compress_image(
    rgb: np.ndarray,
    quality_target: float,
    *,
    ref: metrics.Reference | None = None,
    bound: renditions.SizeBound | None = None,
) -> Encoded:
    """The smallest compact form found to meet the quality target (100 = lossless).

    The AVIF base quality is searched on the base alone (``renditions.search_format``: a few
    measured encodes); the restoration then runs on the setting just below the answer when
    that missed by less than the restoration typically adds, and on the answer unless that
    already succeeded (so once or twice). Whatever is returned was decoded
    and measured to meet the target. AVIF bases that meet it are offered to ``bound`` (the
    delivery-rendition searches running alongside)."""
    if quality_target >= LOSSLESS:
        return encode_lossless(rgb)
    ref = ref or metrics.Reference(rgb)
    need = target_ms_ssim(quality_target)
    t0 = time.perf_counter()
    found = renditions.search_format(ref, "avif", need, bound=bound)
    t1 = time.perf_counter()
    if found.best is None:
        return encode_lossless(rgb)
    below = found.tried.get(found.best.setting - 1)
    encoded, runs = _restoration_step(rgb, ref, need, found.best, below)
    encoded.avif = found.best
    encoded.timings = {
        "base_search_s": t1 - t0,
        "restoration_s": time.perf_counter() - t1,
        "restorations": float(runs),
    }
    return encoded


def _restoration_step(
    rgb: np.ndarray, ref: metrics.Reference, need: float, base: Measured, below: Measured | None
) -> tuple[Encoded, int]:
    """The compact form from the searched base, restored where that measurably helps; and how
    many times the restoration ran."""
    wid = restore.DEFAULT_ID
    runs = 0
    if below is not None and db(need) - db(below.ms_ssim) < RESTORE_REACH_DB:
        runs += 1
        restored = _restored(rgb, below, wid)
        if restored is not None and ref.ms_ssim(restored) >= need:
            return _lossy(rgb, below, restored, wid), runs
    restored = _restored(rgb, base, wid)
    if restored is not None and ref.ms_ssim(restored) < need:
        restored = None  # the base alone meets the target; the restored image would not
    return _lossy(rgb, base, restored, wid), runs + 1


def parse_header(bitstream: bytes) -> dict[str, int]:
    """The header fields; a bitstream that is not ours is rejected."""
    if len(bitstream) < _HEAD.size:
        raise CorruptBitstream("bitstream is truncated")
    magic, version, mode, flags, quality, h, w = _HEAD.unpack_from(bitstream)
    if magic != MAGIC or version not in (VERSION_PLAIN, VERSION_WEIGHTS_ID):
        raise CorruptBitstream("not a CompactEdge v1/v2 bitstream")
    if mode not in _DECODERS:
        raise CorruptBitstream(f"unknown CompactEdge mode {mode}")
    offset, weights_id = _HEAD.size, 1  # every version 1 stream was made with weights id 1
    if version == VERSION_WEIGHTS_ID:
        if len(bitstream) <= offset:
            raise CorruptBitstream("bitstream is truncated")
        weights_id, offset = bitstream[offset], offset + 1
    return {
        "version": version,
        "mode": mode,
        "flags": flags,
        "quality": quality,
        "height": h,
        "width": w,
        "weights_id": weights_id,
        "payload_offset": offset,
    }


def payload(bitstream: bytes) -> bytes:
    """The payload after the header (the AVIF file of a lossy stream)."""
    return bitstream[parse_header(bitstream)["payload_offset"] :]


def _restore_for_decode(rgb: np.ndarray, head: dict[str, int]) -> np.ndarray:
    """Apply the weights the stream names; refuse (never guess) when this build lacks them."""
    if restore.load_restorer(head["weights_id"]) is None:
        raise CorruptBitstream(
            f"bitstream needs restoration weights id {head['weights_id']}, not in this build"
        )
    return restore.restore(rgb, head["quality"], head["weights_id"])


def _decode_lossy(data: bytes, head: dict[str, int]) -> np.ndarray:
    rgb = avif_decode(data)
    return _restore_for_decode(rgb, head) if head["flags"] & FLAG_RESTORE else rgb


_DECODERS: dict[int, Callable[[bytes, dict[str, int]], np.ndarray]] = {
    MODE_LOSSY: _decode_lossy,
    MODE_LOSSLESS_V1: lambda data, _head: lossless_v1.decode(data),
    MODE_LOSSLESS: lambda data, head: lossless.decode(data, (head["height"], head["width"])),
}


def decompress_image(bitstream: bytes) -> np.ndarray:
    """Decode a compact form back to HxWx3 uint8 pixels."""
    head = parse_header(bitstream)
    data = bitstream[head["payload_offset"] :]
    try:
        rgb = _DECODERS[head["mode"]](data, head)
    except (ValueError, OSError, RuntimeError, AssertionError, struct.error) as exc:
        raise CorruptBitstream(f"bitstream does not decode: {exc}") from exc
    if rgb.shape[:2] != (head["height"], head["width"]):
        raise CorruptBitstream("decoded size does not match the header")
    return rgb
