"""The bitstream: lossless bit-exactness, quality targets, golden decodes in a fresh process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compaction import codec, colour, lossless, lossless_v1, metrics, renditions
from compaction.quality import target_ms_ssim
from models.errors import BadRequest
from tests.codec.images import synthetic

GOLDEN = Path(__file__).parent / "golden"
KODAK = Path("/work/shared/data/kodak")


@pytest.mark.parametrize("seed,shape", [(0, (48, 64)), (1, (33, 47)), (2, (130, 20)), (4, (1, 1))])
def test_lossless_round_trip_is_bit_exact(seed: int, shape: tuple[int, int]) -> None:
    rgb = synthetic(*shape, seed=seed)
    enc = codec.compress_image(rgb, 100)
    assert enc.mode == "lossless"
    assert np.array_equal(codec.decompress_image(enc.bitstream), rgb)


def _extremes() -> list[np.ndarray]:
    rng = np.random.default_rng(9)
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (3, 256, 3))
    return [
        np.zeros((9, 13, 3), np.uint8),
        np.full((9, 13, 3), 255, np.uint8),
        rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),  # noise: every residual size
        np.stack([checker, 255 - checker, checker], axis=-1),  # the largest jumps
        np.ascontiguousarray(ramp),
        synthetic(1, 40, seed=1),  # one row, one column, tiny
        synthetic(40, 1, seed=2),
        synthetic(2, 2, seed=3),
    ]


def test_lossless_extremes_round_trip() -> None:
    for rgb in _extremes():
        assert np.array_equal(lossless.decode(lossless.encode(rgb)), rgb), rgb.shape


def test_corrupt_lossless_payloads_fail_safely() -> None:
    """Damaged payloads raise BITSTREAM_CORRUPT or decode to other pixels of the same size
    (the certificate's pixel hash then tells); they never crash, hang or read out of bounds."""
    rgb = synthetic(24, 32, seed=8)
    good = codec.encode_lossless(rgb).bitstream
    rng = np.random.default_rng(1)
    damaged = [good[:-7], good[: len(good) // 2], good + b"\xff" * 64]
    for _ in range(12):
        flipped = bytearray(good)
        flipped[int(rng.integers(16 + 8, len(good)))] ^= 1 << int(rng.integers(8))
        damaged.append(bytes(flipped))
    for bad in damaged:
        try:
            out = codec.decompress_image(bad)
        except BadRequest as exc:
            assert exc.code == "BITSTREAM_CORRUPT"
        else:
            assert out.shape == rgb.shape
    for h, w in ((100_000, 100_000), (5000, 5000)):  # over the cap; under it but not 24x32
        claims = bytearray(good)
        claims[16:24] = h.to_bytes(4, "big") + w.to_bytes(4, "big")
        with pytest.raises(BadRequest):
            codec.decompress_image(bytes(claims))


def test_ycocg_is_reversible_everywhere() -> None:
    v = np.arange(256, dtype=np.uint8)
    rgb = np.stack(np.meshgrid(v, v, v[::17], indexing="ij"), axis=-1).reshape(256, -1, 3)
    assert np.array_equal(colour.from_ycocg(colour.to_ycocg(rgb)), rgb)


@pytest.mark.parametrize("quality_target", [40, 85])
def test_lossy_meets_quality_target(quality_target: float) -> None:
    rgb = synthetic(64, 96, seed=5)
    enc = codec.compress_image(rgb, quality_target)
    decoded = codec.decompress_image(enc.bitstream)
    assert np.array_equal(decoded, enc.decoded)  # what the encoder scored is what decodes
    assert metrics.ms_ssim(rgb, decoded) >= target_ms_ssim(quality_target)
    assert len(enc.bitstream) < rgb.nbytes


@pytest.mark.parametrize("fmt", ["webp", "avif", "jpeg", "png", "auto"])
def test_rendition_meets_quality_target(fmt: str) -> None:
    rgb = synthetic(64, 96, seed=6)
    r = renditions.delivery_rendition(rgb, fmt, 80)
    assert r.lossless or r.ms_ssim >= target_ms_ssim(80)
    assert r.format == fmt or fmt == "auto"


def test_lossless_renditions_are_exact() -> None:
    rgb = synthetic(32, 40, seed=7)
    assert renditions.delivery_rendition(rgb, "auto", 100).lossless
    with pytest.raises(BadRequest):
        renditions.delivery_rendition(rgb, "jpeg", 100)


def test_corrupt_bitstreams_are_rejected() -> None:
    rgb = synthetic(24, 32, seed=8)
    good = codec.encode_lossy(rgb, 50).bitstream
    for bad in (b"", b"CEDG", b"XXXX" + good[4:], good[:20], good[:-40] + b"\0" * 40):
        with pytest.raises(BadRequest):
            codec.decompress_image(bad)


def test_golden_bitstreams_decode_in_a_fresh_process() -> None:
    expected = json.loads((GOLDEN / "golden.json").read_text())
    script = (
        "import hashlib,sys,json\n"
        "from compaction import codec\n"
        "out={}\n"
        "for n in ('lossless','lossless_v1','lossy'):\n"
        "    d=codec.decompress_image(open(sys.argv[1]+'/'+n+'.cedg','rb').read())\n"
        "    out[n]=hashlib.sha256(d.tobytes()).hexdigest()\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(GOLDEN)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["lossless"] == expected["lossless"] == expected["source"]  # lossless: exact
    assert got["lossless_v1"] == expected["source"]  # streams of the first coder still decode
    assert got["lossy"] == expected["lossy"]


def test_lossless_encoder_is_deterministic_against_golden() -> None:
    from tests.codec.images import synthetic as make

    rgb = make(24, 32, seed=3)
    assert codec.encode_lossless(rgb).bitstream == (GOLDEN / "lossless.cedg").read_bytes()
    assert (
        hashlib.sha256(rgb.tobytes()).hexdigest()
        == json.loads((GOLDEN / "golden.json").read_text())["source"]
    )


@pytest.mark.skipif(not KODAK.exists(), reason="shared Kodak set not present")
def test_lossless_on_a_real_photo_crop() -> None:
    from PIL import Image

    rgb = np.asarray(Image.open(KODAK / "kodim23.png").convert("RGB"))[:96, :128].copy()
    enc = lossless.encode(rgb)
    assert np.array_equal(lossless.decode(enc), rgb)
    assert len(enc) * 8 / (96 * 128) < 24


PHOTOS = Path("/work/shared/data/photos")


@pytest.mark.skipif(not PHOTOS.exists(), reason="shared training photos not present")
@pytest.mark.parametrize("name", ["001.png", "022.png", "047.png"])
def test_lossless_beats_the_first_coder_and_png_on_photos(name: str) -> None:
    from PIL import Image

    rgb = np.asarray(Image.open(PHOTOS / name).convert("RGB"))[200:328, 300:492].copy()
    data = lossless.encode(rgb)
    assert np.array_equal(lossless.decode(data), rgb)
    assert len(data) < len(lossless_v1.encode(rgb))
    assert len(data) < len(renditions._LOSSLESS["png"](rgb))
