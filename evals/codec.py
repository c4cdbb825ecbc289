"""CompactEdge against the codecs people would otherwise use, on images it never trained on.

    python -m evals.codec --images /work/shared/data/kodak [--limit N] [--lossless-limit M]
        [--jobs 2]

Prints per-codec mean bits-per-pixel / PSNR / MS-SSIM at each rate point, BD-rates against
Pillow JPEG (bjontegaard, pchip; PSNR and MS-SSIM in dB, -10 log10(1 - MS-SSIM)), lossless bpp
(ours, PNG, WebP lossless, JPEG XL effort 7; ``evals.codec_lossless``), encode/decode speed of
our lossy and lossless modes, and the learned restoration's gain over its own AVIF base layer
(the default weights, and weights id 1 on the same bases). The lossy points of each image run in
one of ``--jobs`` processes side by side (so the encode/decode speeds are per process, on a
shared CPU); the lossless figures run one image at a time. The last line is JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import bjontegaard as bd
import imagecodecs
import numpy as np
import torch
from PIL import Image

from compaction import codec, metrics, restore
from compaction.base import avif_decode, avif_encode
from evals import codec_lossless

Codec = Callable[[np.ndarray, float], bytes]


def _pil(fmt: str, **kw: object) -> Callable[[np.ndarray, float], bytes]:
    def enc(a: np.ndarray, q: float) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, fmt, quality=int(q), **kw)
        return buf.getvalue()

    return enc


def _decode(data: bytes) -> np.ndarray:
    if data[:2] == b"\xff\x0a" or data[4:8] == b"JXL ":
        return np.asarray(imagecodecs.jpegxl_decode(data))[..., :3]
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).copy()


LOSSY: dict[str, tuple[Codec, list[float]]] = {
    "jpeg": (_pil("JPEG", optimize=True), [15, 30, 50, 70, 85, 93]),
    "webp": (_pil("WEBP", method=6), [15, 30, 50, 70, 85, 93]),
    "avif": (lambda a, q: avif_encode(a, int(q)), [25, 40, 55, 65, 75, 85]),
    "jxl": (
        lambda a, d: bytes(imagecodecs.jpegxl_encode(a, distance=d, effort=7)),
        [6.0, 4.0, 2.5, 1.5, 1.0, 0.6],
    ),
}
OURS_QUALITIES = [25, 40, 55, 65, 75, 85]


def _db_msssim(v: float) -> float:
    return -10 * math.log10(max(1e-10, 1 - v))


def _curve(
    points: list[tuple[float, float, float]],
) -> tuple[list[float], list[float], list[float]]:
    pts = sorted(points)
    return [p[0] for p in pts], [p[1] for p in pts], [_db_msssim(p[2]) for p in pts]


def _bd(anchor, test, idx: int) -> float | None:
    try:
        return round(
            float(
                bd.bd_rate(
                    anchor[0],
                    anchor[idx],
                    test[0],
                    test[idx],
                    method="pchip",
                    require_matching_points=False,
                    min_overlap=0.0,
                )
            ),
            2,
        )
    except Exception as exc:  # non-overlapping curves: say so rather than invent a number
        print(f"  bd-rate failed: {exc}")
        return None


def _lossy_rows(path: Path) -> dict[str, Any]:
    """Every codec's (bpp, PSNR, MS-SSIM) rate points on one image, our encode/decode times and
    the restoration's PSNR gain over its own base (the default weights and weights id 1)."""
    torch.set_num_threads(1)  # one image per process; processes run side by side
    rgb = _load(path)
    n = rgb.shape[0] * rgb.shape[1]
    out: dict[str, Any] = {"rows": {}, "enc_t": 0.0, "dec_t": 0.0, "pixels": 0, "gain": []}
    out["gain_v1"] = []
    for name, (enc, params) in LOSSY.items():
        rows = []
        for q in params:
            data = enc(rgb, q)
            dec = _decode(data)
            rows.append([len(data) * 8 / n, metrics.psnr(rgb, dec), metrics.ms_ssim(rgb, dec)])
        out["rows"][name] = rows
    rows = []
    for q in OURS_QUALITIES:
        t0 = time.perf_counter()
        e = codec.encode_lossy(rgb, q)
        t1 = time.perf_counter()
        dec = codec.decompress_image(e.bitstream)
        t2 = time.perf_counter()
        out["enc_t"] += t1 - t0
        out["dec_t"] += t2 - t1
        out["pixels"] += n
        rows.append([len(e.bitstream) * 8 / n, metrics.psnr(rgb, dec), metrics.ms_ssim(rgb, dec)])
        base = avif_decode(codec.payload(e.bitstream))
        base_psnr = metrics.psnr(rgb, base)
        out["gain"].append(metrics.psnr(rgb, dec) - base_psnr)
        v1 = metrics.psnr(rgb, restore.restore(base, q, 1)) - base_psnr
        out["gain_v1"].append(max(0.0, v1))  # kept only where it helps, as the encoder does
    out["rows"]["ours"] = rows
    return out


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images")
    parser.add_argument(
        "--lossless-limit",
        type=int,
        default=0,
        help="lossless figures on the first M images only (decode is slow)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes for the lossy points")
    args = parser.parse_args()
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in {".png", ".ppm"})
    if args.limit:
        files = files[: args.limit]
    images = [_load(f) for f in files]
    print(f"{len(images)} images from {args.images}")
    sums: dict[str, np.ndarray] = {}
    enc_t = dec_t = pixels = 0.0
    restore_gain: list[float] = []
    restore_gain_v1: list[float] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for f, res in zip(files, pool.map(_lossy_rows, files), strict=True):
            for name, rows in res["rows"].items():
                sums[name] = sums.get(name, 0) + np.array(rows)
            enc_t, dec_t, pixels = (
                enc_t + res["enc_t"],
                dec_t + res["dec_t"],
                pixels + res["pixels"],
            )
            restore_gain += res["gain"]
            restore_gain_v1 += res["gain_v1"]
            print(
                f"  {f.name}: restoration gain {np.mean(res['gain']):+.3f} dB "
                f"(weights id 1: {np.mean(res['gain_v1']):+.3f} dB)",
                flush=True,
            )
    curves = {k: _curve([tuple(r) for r in v / len(images)]) for k, v in sums.items()}
    for name, (rates, psnrs, ms) in curves.items():
        print(
            f"{name:5s} "
            + "  ".join(
                f"{r:.3f}bpp/{p:.2f}dB/{m:.2f}dB-ms"
                for r, p, m in zip(rates, psnrs, ms, strict=True)
            )
        )
    bd_psnr = {k: _bd(curves["jpeg"], curves[k], 1) for k in ("ours", "webp", "avif", "jxl")}
    bd_ms = {k: _bd(curves["jpeg"], curves[k], 2) for k in ("ours", "webp", "avif", "jxl")}
    loaded = restore.load_restorer()
    print(
        f"restoration gain over its AVIF base: mean {np.mean(restore_gain):+.3f} dB "
        f"(weights {loaded[1] if loaded else 'none'}); weights id 1 on the same bases: "
        f"{np.mean(restore_gain_v1):+.3f} dB"
    )

    named = list(zip((f.stem for f in files), images, strict=True))
    ll = codec_lossless.measure(named[: args.lossless_limit] if args.lossless_limit else named)
    summary = {
        "bd_rate_psnr_vs_jpeg": bd_psnr,
        "bd_rate_msssim_vs_jpeg": bd_ms,
        "lossless_bpp": ll["lossless_bpp"],
        "encode_mpx_s": round(pixels / enc_t / 1e6, 3),
        "decode_mpx_s": round(pixels / dec_t / 1e6, 3),
        "lossless_encode_mpx_s": ll["lossless_encode_mpx_s"],
        "lossless_decode_mpx_s": ll["lossless_decode_mpx_s"],
        "restoration_gain_db": round(float(np.mean(restore_gain)), 3),
        "restoration_gain_db_weights_v1": round(float(np.mean(restore_gain_v1)), 3),
        "images": len(images),
        "lossless_images": ll["lossless_images"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
