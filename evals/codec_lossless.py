"""CompactEdge's lossless mode against PNG, WebP lossless and JPEG XL lossless (effort 7).

    python -m evals.codec_lossless --images /work/shared/data/kodak [--limit N]

Prints one row per image (bits per pixel of each codec, our encode/decode seconds), then the
means and our speed; the last line is JSON. Every round trip is checked bit-exact. Also used by
``python -m evals.codec`` for its ``lossless_bpp`` summary.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import numpy as np
from PIL import Image

from compaction import lossless


def _pillow(fmt: str, **params: object) -> Callable[[np.ndarray], bytes]:
    def encode(rgb: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, fmt, **params)
        return buf.getvalue()

    return encode


BASELINES: dict[str, Callable[[np.ndarray], bytes]] = {
    "png": _pillow("PNG", optimize=True),
    "webp": _pillow("WEBP", lossless=True, quality=100, method=6),
    "jxl": lambda rgb: bytes(imagecodecs.jpegxl_encode(rgb, lossless=True, effort=7)),
}


def measure(images: list[tuple[str, np.ndarray]]) -> dict[str, object]:
    """Mean bpp of ours and each baseline, and our speed, over ``(name, rgb)`` pairs."""
    totals = dict.fromkeys(("ours", *BASELINES), 0.0)
    enc_s = dec_s = pixels = 0.0
    print(f"{'image':12s} {'ours':>7s} " + " ".join(f"{k:>7s}" for k in BASELINES) + "   enc/dec s")
    for name, rgb in images:
        n = rgb.shape[0] * rgb.shape[1]
        t0 = time.perf_counter()
        data = lossless.encode(rgb)
        t1 = time.perf_counter()
        if not np.array_equal(lossless.decode(data), rgb):
            raise SystemExit(f"{name}: lossless round trip is not exact")
        t2 = time.perf_counter()
        enc_s, dec_s, pixels = enc_s + t1 - t0, dec_s + t2 - t1, pixels + n
        row = {"ours": len(data) * 8 / n}
        row |= {k: len(enc(rgb)) * 8 / n for k, enc in BASELINES.items()}
        for k, v in row.items():
            totals[k] += v
        print(
            f"{name:12s} "
            + " ".join(f"{row[k]:7.3f}" for k in totals)
            + f"   {t1 - t0:.2f}/{t2 - t1:.2f}",
            flush=True,
        )
    means = {k: round(v / len(images), 3) for k, v in totals.items()}
    return {
        "lossless_bpp": means,
        "lossless_encode_mpx_s": round(pixels / enc_s / 1e6, 3),
        "lossless_decode_mpx_s": round(pixels / dec_s / 1e6, 3),
        "lossless_images": len(images),
    }


def load(directory: Path, limit: int = 0) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in {".png", ".ppm"})
    files = files[:limit] if limit else files
    return [(f.stem, np.asarray(Image.open(f).convert("RGB")).copy()) for f in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images")
    args = parser.parse_args()
    lossless.decode(lossless.encode(np.zeros((2, 2, 3), np.uint8)))  # compile before timing
    summary = measure(load(args.images, args.limit))
    print(f"means: {summary['lossless_bpp']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
