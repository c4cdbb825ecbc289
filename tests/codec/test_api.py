"""The API end to end (SQLite and PostgreSQL) against a loopback server hosting the assets."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from compaction.store import asset_dir
from models.ledger import entries_after
from tests.codec.images import png_bytes, synthetic
from tests.conftest import auth


async def _wait(client: httpx.AsyncClient, key: str, cid: str) -> dict[str, Any]:
    for _ in range(600):  # bounded: at most ~5 minutes on a loaded machine
        r = await client.get(f"/api/compact/{cid}", headers=auth(key))
        body = r.json()
        if body["status"] in ("succeeded", "failed"):
            return body
        await asyncio.sleep(0.5)
    raise AssertionError("compaction did not finish")


async def test_compact_rehydrate_certify_score(client, make_key, asset_server) -> None:
    base, root = asset_server
    rgb = synthetic(48, 64, seed=11)
    (root / "photo.dat").write_bytes(png_bytes(rgb))  # sniffed, not trusted by extension
    key = await make_key("write")
    r = await client.post(
        "/api/compact",
        headers=auth(key),
        json={"asset_url": f"{base}/photo.dat", "quality_target": 100},
    )
    assert r.status_code == 202, r.text
    cid = r.json()["compact_id"]
    body = await _wait(client, key, cid)
    assert body["status"] == "succeeded", body
    assert body["bit_exact"] is True and body["compact_bytes"] > 0

    r = await client.post("/api/rehydrate", headers=auth(key), json={"compact_id": cid})
    assert r.status_code == 200, r.text
    restored = r.json()
    assert restored["bit_exact"] is True
    r = await client.get(restored["restored_url"], headers=auth(key))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    import io

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert np.array_equal(pixels, rgb)
    assert hashlib.sha256(r.content).hexdigest() == restored["file_sha256"]

    r = await client.get(f"/api/integrity/{cid}", headers=auth(key))
    cert = r.json()
    assert cert["verification"]["valid"] is True
    assert cert["certificate"]["signature"]["algorithm"] == "Ed25519"

    r = await client.get(f"/api/mobility-score/{cid}", headers=auth(key))
    score = r.json()
    assert 0 <= score["score"] <= 100 and set(score["components"]) == {
        "size",
        "quality",
        "delivery",
        "cacheability",
    }

    entries = await entries_after(-1, limit=500)
    assert any(e["action"] == "compact_created" and e["target"] == cid for e in entries)

    bitstream: Path = asset_dir(cid) / "compact.cedg"
    data = bytearray(bitstream.read_bytes())
    data[-1] ^= 0xFF
    bitstream.write_bytes(bytes(data))
    r = await client.get(f"/api/integrity/{cid}", headers=auth(key))
    assert r.json()["verification"]["valid"] is False


async def test_lossy_rendition_served(client, make_key, asset_server) -> None:
    base, root = asset_server
    (root / "lossy.png").write_bytes(png_bytes(synthetic(64, 80, seed=12)))
    key = await make_key("write")
    r = await client.post(
        "/api/compact",
        headers=auth(key),
        json={"asset_url": f"{base}/lossy.png", "format_preference": "webp"},
    )
    body = await _wait(client, key, r.json()["compact_id"])
    assert body["status"] == "succeeded", body
    assert body["rendition"]["format"] == "webp" and body["rendition"]["meets_target"]
    r = await client.get(body["rendition"]["url"], headers=auth(key))
    assert r.status_code == 200 and r.content[8:12] == b"WEBP"


@pytest.mark.parametrize(
    "name,content,code",
    [
        ("page.png", b"<html>hello</html>", "NOT_MEDIA"),
        ("broken.png", png_bytes(synthetic(20, 20))[:50], "CORRUPT_MEDIA"),
        ("doc.png", b"%PDF-1.4 hello", "UNSUPPORTED_FORMAT"),
    ],
)
async def test_bad_assets_fail_cleanly(client, make_key, asset_server, name, content, code) -> None:
    base, root = asset_server
    (root / name).write_bytes(content)
    key = await make_key("write")
    r = await client.post("/api/compact", headers=auth(key), json={"asset_url": f"{base}/{name}"})
    cid = r.json()["compact_id"]
    body = await _wait(client, key, cid)
    assert body["status"] == "failed" and body["error"]["code"] == code
    assert not asset_dir(cid).exists()  # nothing half-stored
    r = await client.post("/api/rehydrate", headers=auth(key), json={"compact_id": cid})
    assert r.status_code == 409


async def test_refusals_and_validation(client, make_key, asset_server) -> None:
    base, _root = asset_server
    key = await make_key("write")
    r = await client.post(
        "/api/compact",
        headers=auth(key),
        json={"asset_url": "http://169.254.169.254/latest/meta-data"},
    )
    assert r.status_code == 400 and r.json()["code"] == "SSRF_BLOCKED"
    r = await client.post(
        "/api/compact",
        headers=auth(key),
        json={"asset_url": f"{base}/x.png", "quality_target": 101},
    )
    assert r.status_code == 400
    r = await client.post(
        "/api/compact",
        headers=auth(key),
        json={"asset_url": f"{base}/x.png", "quality_target": 100, "format_preference": "jpeg"},
    )
    assert r.status_code == 400 and r.json()["code"] == "FORMAT_CANNOT_BE_LOSSLESS"
    r = await client.post("/api/compact", headers=auth(key), json={})
    assert r.status_code == 400
    r = await client.get("/api/compact/cmp_doesnotexist", headers=auth(key))
    assert r.status_code == 404
    read_key = await make_key("read")
    r = await client.post(
        "/api/compact", headers=auth(read_key), json={"asset_url": f"{base}/x.png"}
    )
    assert r.status_code == 403
