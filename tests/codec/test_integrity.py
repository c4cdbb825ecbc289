"""Certificates: they verify, and a tampered bitstream, body or signing key fails (they are
signed by the ledger's key and must verify against its keyring, across key rotations); ingest
refuses bad input."""

from __future__ import annotations

import base64
import io
import os
import stat

import numpy as np
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from PIL import Image

from compaction import certificate, codec, ingest, metrics, pipeline, renditions
from compaction.quality import target_ms_ssim
from models.errors import BadRequest, PayloadTooLarge
from models.ledger import signing
from models.ledger.checkpoints import signer
from models.settings import Settings, configure, get_settings
from tests.codec.images import png_bytes, synthetic


@pytest.fixture(autouse=True)
def _data_dir(tmp_path):
    configure(Settings(data_dir=tmp_path))
    signing.reset_cache()
    yield
    configure(None)
    signing.reset_cache()


def _compacted(quality: float = 85):
    data = png_bytes(synthetic(40, 56, seed=2))
    media = ingest.decode_media(data)
    return pipeline.compact_media(
        media, data, quality_target=quality, preference="auto", compact_id="cmp_test"
    )


@pytest.mark.parametrize("quality,preference", [(85, "auto"), (60, "webp"), (95, "avif")])
def test_certified_scores_are_measured_on_what_is_delivered(quality: float, preference: str):
    rgb = synthetic(64, 80, seed=4)
    data = png_bytes(rgb)
    result = pipeline.compact_media(
        ingest.decode_media(data),
        data,
        quality_target=quality,
        preference=preference,
        compact_id="cmp_measured",
    )
    body, need = result.body, target_ms_ssim(quality)
    decoded = codec.decompress_image(result.bitstream)  # what a later rehydrate gives
    assert body["hashes"]["decoded_pixels_sha256"] == pipeline.pixels_sha256([decoded])
    assert body["scores"]["ms_ssim"] == round(metrics.ms_ssim(rgb, decoded), 6) >= need
    delivered = renditions.decode(result.rendition, result.rendition_format)
    remeasured = metrics.ms_ssim(rgb, delivered)
    assert body["rendition"]["ms_ssim"] == round(remeasured, 6) and remeasured >= need
    assert body["meets_target"] and body["rendition"]["meets_target"]
    assert preference == "auto" or result.rendition_format == preference


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
    # the ledger's key, not a key of CompactEdge's own
    assert certificate.signing_key_path() == get_settings().ledger_key_path
    mode = stat.S_IMODE(os.stat(certificate.signing_key_path()).st_mode)
    assert mode == 0o600
    assert cert["signature"]["key_id"] == signer().key_id.hex()
    assert cert["signature"]["verifier_key"] == signer().verifier_key


def _resigned(cert: dict, key: Ed25519PrivateKey, name: str) -> dict:
    """The certificate re-signed, correctly in form, by ``key``."""
    stranger = signing.Signer(name, key)
    body = {k: v for k, v in cert.items() if k != "signature"}
    value = key.sign(certificate.CONTEXT + rfc8785.dumps(body))
    return {
        **body,
        "signature": {
            **cert["signature"],
            "key_id": stranger.key_id.hex(),
            "verifier_key": stranger.verifier_key,
            "public_key": base64.b64encode(stranger.public_key).decode(),
            "value": base64.b64encode(value).decode(),
        },
    }


def test_certificate_resigned_by_a_stranger_fails() -> None:
    result = _compacted()
    cert = certificate.sign(result.body)
    forged = {**cert, "scores": {**cert["scores"], "ms_ssim": 1.0}}
    resigned = _resigned(forged, Ed25519PrivateKey.generate(), signer().name)
    check = certificate.verify(resigned, result.bitstream)
    assert check["signature_valid"] and not check["key_trusted"] and not check["valid"]
    # claiming a trusted key id while carrying another public key does not help
    lying = {**resigned, "signature": {**resigned["signature"], "key_id": signer().key_id.hex()}}
    assert not certificate.verify(lying, result.bitstream)["valid"]


def test_certificate_issued_before_a_ledger_key_rotation_still_verifies() -> None:
    result = _compacted()
    before = certificate.sign(result.body)
    settings = get_settings()
    old, new = signing.rotate(
        settings.ledger_key_path, settings.ledger_keyring_path, settings.ledger_origin
    )
    after = certificate.sign(result.body)
    assert before["signature"]["key_id"] == old.key_id.hex()
    assert after["signature"]["key_id"] == new.key_id.hex() != old.key_id.hex()
    for cert in (before, after):
        check = certificate.verify(cert, result.bitstream)
        assert check["valid"] and check["key_trusted"], check
    # without the keyring the retired key is a stranger
    settings.ledger_keyring_path.unlink()
    assert not certificate.verify(before, result.bitstream)["valid"]
    assert certificate.verify(after, result.bitstream)["valid"]


def test_legacy_certificate_signed_by_compactedge_key_still_verifies() -> None:
    result = _compacted()
    legacy = Ed25519PrivateKey.generate()
    pem = legacy.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    body = dict(result.body)
    public = legacy.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    cert = {
        **body,
        "signature": {
            "algorithm": "Ed25519",
            "public_key": base64.b64encode(public).decode(),
            "value": base64.b64encode(legacy.sign(rfc8785.dumps(body))).decode(),
        },
    }
    assert not certificate.verify(cert, result.bitstream)["valid"]  # key file absent: unknown
    certificate.legacy_key_path().parent.mkdir(parents=True)
    certificate.legacy_key_path().write_bytes(pem)
    assert certificate.verify(cert, result.bitstream)["valid"]


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
