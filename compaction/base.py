"""The classical base layer: AVIF (AV1 intra, 4:4:4) through Pillow's libavif.

AV1 decoding is bit-exact by specification, so the base layer decodes to the same pixels on every
conforming decoder; the learned layers build on top of it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

AVIF_SPEED = 6


def avif_encode(rgb: np.ndarray, quality: int, *, speed: int = AVIF_SPEED) -> bytes:
    """Encode HxWx3 uint8 as AVIF 4:4:4 at a Pillow quality (0-100)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "AVIF", quality=int(quality), speed=speed, subsampling="4:4:4")
    return buf.getvalue()


def avif_decode(data: bytes) -> np.ndarray:
    """Decode AVIF bytes to HxWx3 uint8."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).copy()
