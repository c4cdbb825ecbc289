"""The bitstream: lossless bit-exactness, quality targets, golden decodes in a fresh process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from compaction import codec, colour, lossless, lossless_v1, metrics, renditions, restore, search
from compaction.quality import target_ms_ssim
from compaction.search import Measured
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
        "for n in ('lossless','lossless_v1','lossy','lossy_v2'):\n"
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
    assert got["lossy"] == expected["lossy"]  # a frozen version 1 stream: weights id 1 forever
    assert got["lossy_v2"] == expected["lossy_v2"]


def test_golden_streams_name_their_restoration_weights() -> None:
    v1 = codec.parse_header((GOLDEN / "lossy.cedg").read_bytes())
    v2 = codec.parse_header((GOLDEN / "lossy_v2.cedg").read_bytes())
    assert (v1["version"], v1["weights_id"]) == (1, 1)
    assert v2["version"] == 2 and v2["weights_id"] in restore.SPECS
    assert v1["flags"] & v2["flags"] & codec.FLAG_RESTORE  # both really run their networks


def test_every_registered_weights_file_matches_its_pinned_hash() -> None:
    for wid, spec in restore.SPECS.items():
        loaded = restore.load_restorer(wid)
        assert loaded is not None, spec.file
        assert loaded[1].endswith(spec.sha256[:12])
    assert restore.DEFAULT_ID in restore.SPECS


def test_stream_naming_unknown_weights_is_refused() -> None:
    rgb = synthetic(24, 32, seed=8)
    enc = codec.encode_lossy(rgb, 30)
    head = codec.parse_header(enc.bitstream)
    data = bytearray(enc.bitstream)
    data[6] |= codec.FLAG_RESTORE
    data[head["payload_offset"] - 1] = 250  # no such weights id
    with pytest.raises(BadRequest, match="weights id 250"):
        codec.decompress_image(bytes(data))


@pytest.mark.parametrize("shape", [(24, 32), (17, 23)])
def test_restoration_is_exact_whatever_the_thread_count(shape: tuple[int, int]) -> None:
    rgb = synthetic(*shape, seed=11)
    outs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append([restore.restore(rgb, q, wid) for wid in restore.SPECS for q in (30, 70)])
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs, strict=True):
        assert a.shape == rgb.shape and np.array_equal(a, b)


def _restore_inputs() -> list[tuple[np.ndarray, int]]:
    """Images and base qualities for the exactness comparisons: real detail, the extremes
    (black, white, a 0/255 checkerboard: the largest activations) and odd sizes."""
    checker = (np.indices((24, 30)).sum(0) % 2 * 255).astype(np.uint8)
    images = [
        synthetic(64, 96, seed=3),
        synthetic(17, 23, seed=5),
        np.zeros((12, 16, 3), np.uint8),
        np.full((12, 16, 3), 255, np.uint8),
        np.repeat(checker[..., None], 3, axis=2),
    ]
    if (KODAK / "kodim07.png").exists():
        from PIL import Image

        with Image.open(KODAK / "kodim07.png") as im:
            images.append(np.asarray(im.convert("RGB"))[:128, :192].copy())
    return [(rgb, q) for rgb in images for q in (1, 37, 100)]


@pytest.mark.parametrize("wid", sorted(restore.SPECS))
def test_float32_digit_convolutions_give_the_float64_forms_values(wid: int) -> None:
    model, _ = restore.load_restorer(wid) or pytest.fail("weights not shipped")
    spec = restore.SPECS[wid]
    assert restore._float32_convs_exact(model, spec)  # the fast path is the one in use here
    for rgb, q in _restore_inputs():
        x = restore.net_input(restore._even(rgb) if spec.unshuffle > 1 else rgb, q)
        with torch.no_grad():
            want = model(x, act_step=spec.act_step)  # the float64 reference form
            assert torch.equal(restore._exact_convs(model, spec, x), want), (rgb.shape, q)


def test_restoration_falls_back_to_float64_where_float32_is_not_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rgb, q = synthetic(40, 56, seed=6), 45
    fast = restore.restore(rgb, q)
    monkeypatch.setitem(restore._f32_checked, restore.DEFAULT_ID, False)
    calls: list[int] = []
    real = restore._exact_convs

    def counted(*args: Any) -> torch.Tensor:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(restore, "_exact_convs", counted)
    assert np.array_equal(restore.restore(rgb, q), fast)
    assert calls == []  # the float64 form ran


def _direct_ms_ssim(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """MS-SSIM and SSIM with a direct 2-D 11x11 window convolution (the textbook form)."""
    import torch.nn.functional as F

    def window(size: int) -> torch.Tensor:
        x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(x**2) / (2 * 1.5**2))
        g = g / g.sum()
        return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()

    def parts(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        win = window(min(11, x.shape[-1], x.shape[-2]))
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        mx, my = F.conv2d(x, win, groups=3), F.conv2d(y, win, groups=3)
        sxx = F.conv2d(x * x, win, groups=3) - mx**2
        syy = F.conv2d(y * y, win, groups=3) - my**2
        sxy = F.conv2d(x * y, win, groups=3) - mx * my
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        return (((2 * mx * my + c1) / (mx**2 + my**2 + c1)) * cs).mean((2, 3)), cs.mean((2, 3))

    scales = 1
    while scales < 5 and min(a.shape[:2]) // (2**scales) >= 11:
        scales += 1
    w = torch.tensor((0.0448, 0.2856, 0.3001, 0.2363, 0.1333)[:scales], dtype=torch.float64)
    w = w / w.sum()
    x, y = (torch.from_numpy(i.astype(np.float64)).permute(2, 0, 1)[None] for i in (a, b))
    values, ssim0 = [], 0.0
    for i in range(scales):
        s, cs = parts(x, y)
        ssim0 = float(s.mean()) if i == 0 else ssim0
        values.append(torch.relu(s if i == scales - 1 else cs))
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return float(torch.prod(torch.stack(values) ** w[:, None, None], 0).mean()), ssim0


@pytest.mark.parametrize("shape", [(96, 160), (40, 52), (9, 13)])
def test_fast_ms_ssim_is_the_same_definition(shape: tuple[int, int]) -> None:
    rgb = synthetic(*shape, seed=12)
    noisy = np.clip(rgb + np.random.default_rng(1).normal(0, 6, rgb.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    ms, s = _direct_ms_ssim(rgb, noisy)
    ref = metrics.Reference(rgb)
    assert abs(ref.ms_ssim(noisy) - ms) < 1e-12
    assert abs(metrics.ssim(rgb, noisy) - s) < 1e-12
    assert ref.scores(noisy) == {
        "psnr": round(metrics.psnr(rgb, noisy), 4),
        "ssim": round(s, 6),
        "ms_ssim": round(ms, 6),
    }


def _bisection(measure: Callable[[int], Measured], need: float) -> int | None:
    lo, hi, best = 1, 100, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if measure(mid).ms_ssim >= need:
            best, hi = mid, mid - 1
        else:
            lo = mid + 1
    return best


@pytest.mark.parametrize("start,slope", [(50, 0.15), (3, 0.05), (97, 1.0), (40, 0.01), (60, -1)])
def test_search_finds_what_bisection_finds(start: float, slope: float) -> None:
    rng = np.random.default_rng(int(start))
    curve = np.cumsum(rng.uniform(0.0, 0.4, 100))  # a monotone quality-in-dB curve
    calls: list[int] = []

    def measure(q: int) -> Measured:
        calls.append(q)
        return Measured(q, b"", np.zeros(1), 1 - 10 ** (-curve[q - 1] / 10))

    for need_db in (0.5, 5.0, 12.0, float(curve[-1]) + 1):
        need = 1 - 10 ** (-need_db / 10)
        calls.clear()
        result = search.smallest_meeting(measure, need, search.slope_estimator(start, slope, need))
        assert len(set(calls)) == len(calls)  # no setting encoded twice
        found = result.best.setting if result.best else None
        assert found == _bisection(measure, need)
        assert result.best is None or result.best.ms_ssim >= need


def test_compact_form_reuses_its_avif_base_as_the_avif_rendition() -> None:
    rgb = synthetic(64, 96, seed=13)
    enc = codec.compress_image(rgb, 70)
    assert enc.avif is not None and enc.avif.ms_ssim >= target_ms_ssim(70)
    assert enc.base_quality in (
        enc.avif.setting,
        enc.avif.setting - 1,
    )  # restoration may go 1 below
    r = renditions.delivery_rendition(rgb, "avif", 70, avif=enc.avif)
    assert r.data == enc.avif.data and r.ms_ssim >= target_ms_ssim(70)


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
