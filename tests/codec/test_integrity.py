"""Certificates: they verify, and a tampered bitstream or body fails; ingest refuses bad input."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
from PIL import Image

from compaction import certificate, ingest, pipeline
from models.errors import BadRequest, PayloadTooLarge
from models.settings import Settings, configure
from tests.codec.images import png_bytes, synthetic


@pytest.fixture(autouse=True)
def _data_dir(tmp_path):
    configure(Settings(data_dir=tmp_path))
    yield
    configure(None)


def _compacted(quality: float = 85):
    data = png_bytes(synthetic(40, 56, seed=2))
    media = ingest.decode_media(data)
    return pipeline.compact_media(
        media, data, quality_target=quality, preference="auto", compact_id="cmp_test"
    )


def test_certificate_verifies_and_tamper_fails() -> None:
    result = _compacted()
    cert = certificate.sign(result.body)
    assert certificate.verify(cert, result.bitstream)["valid"]
    tampered = bytearray(result.bitstream)
    tampered[-1] ^= 1
    check = certificate.verify(cert, bytes(tampered))
    assert not check["valid"] and check["signature_valid"] and not check["bitstream_intact"]
    forged = {**cert, "scores": {**cert["scores"], "ms_ssim": 1.0}}
    assert not certificate.verify(forged, result.bitstream)["signature_valid"]
    mode = stat.S_IMODE(os.stat(certificate.signing_key_path()).st_mode)
    assert mode == 0o600


def test_lossless_certificate_says_bit_exact() -> None:
    result = _compacted(100)
    assert result.body["bit_exact"] is True
    hashes = result.body["hashes"]
    assert hashes["original_pixels_sha256"] == hashes["decoded_pixels_sha256"]


def test_sniffing_ignores_names_and_rejects_non_media() -> None:
    with pytest.raises(BadRequest) as exc:
        ingest.decode_media(b"<!doctype html><html>not an image</html>")
    assert exc.value.code == "NOT_MEDIA"
    with pytest.raises(BadRequest) as exc:
        ingest.decode_media(b"%PDF-1.7 ...")
    assert exc.value.code == "UNSUPPORTED_FORMAT"
    with pytest.raises(BadRequest) as exc:
        ingest.decode_media(b"")
    assert exc.value.code == "NOT_MEDIA"


def test_corrupt_and_oversized_images(monkeypatch: pytest.MonkeyPatch) -> None:
    data = png_bytes(synthetic(40, 56))
    with pytest.raises(BadRequest) as exc:
        ingest.decode_media(data[:60])
    assert exc.value.code == "CORRUPT_MEDIA"
    monkeypatch.setattr(ingest, "MAX_PIXELS", 100)
    with pytest.raises(PayloadTooLarge):
        ingest.decode_media(data)
    monkeypatch.setattr(ingest, "MAX_BYTES", 10)
    with pytest.raises(PayloadTooLarge):
        ingest.decode_media(data)


def test_alpha_and_palette_images_normalise_to_rgb() -> None:
    rgba = np.dstack([synthetic(16, 16), np.full((16, 16), 128, np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    media = ingest.decode_media(buf.getvalue())
    assert media.frames[0].shape == (16, 16, 3) and "alpha channel dropped" in media.notes


def test_ssrf_refusals() -> None:
    from tools.ssrf import check_url

    for url in (
        "http://127.0.0.1/a.png",
        "http://169.254.169.254/latest",
        "http://10.0.0.1/x",
        "file:///etc/passwd",
    ):
        with pytest.raises(BadRequest) as exc:
            check_url(url)
        assert exc.value.code in {"SSRF_BLOCKED", "URL_INVALID"}
