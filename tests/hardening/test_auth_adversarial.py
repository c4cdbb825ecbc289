"""Authentication under attack, against a real ``execflow serve`` whose logs are captured.

Malformed, truncated, tampered, unknown, revoked and wrong-scope keys, a bounded brute force,
and afterwards: no line the server logged contains any key or any key's hash.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
from pathlib import Path

import httpx
import pytest

import api.keys
import api.security
from api.keys import ALPHABET, generate_key, hash_key, is_well_formed
from tests.conftest import KeyFactory, auth

BRUTE_FORCE_ATTEMPTS = 150


def _error_shaped(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["message"] and body["code"]


def _tamper(key: str) -> str:
    i = len(key) // 2
    return key[:i] + ("a" if key[i] != "a" else "b") + key[i + 1 :]


async def test_key_attacks_and_logs_hold_no_key_material(
    served: tuple[str, Path], make_key: KeyFactory
) -> None:
    base, log_path = served
    root_admin = await make_key("admin", name="root")
    keys_seen = [root_admin]
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        created: dict[str, str] = {}
        ids: dict[str, int] = {}
        for scope in ("read", "write", "admin"):
            r = await c.post(
                "/api/keys",
                headers=auth(root_admin),
                json={"name": f"adv-{scope}", "scope": scope, "plan": "pro"},
            )
            assert r.status_code == 201, r.text
            created[scope], ids[scope] = r.json()["key"], r.json()["api_key"]["id"]
            keys_seen.append(created[scope])
            assert (await c.get("/api/servers", headers=auth(created[scope]))).status_code == 200

        # Missing, malformed and truncated credentials: 401 in the error shape, never 5xx.
        read = created["read"]
        bad_headers: list[dict[str, str]] = [
            {},
            {"Authorization": ""},
            {"Authorization": "Bearer"},
            {"Authorization": f"Basic {read}"},
            {"Authorization": f"Token {read}"},
            {"Authorization": read},
            {"Authorization": f"Bearer {read[:-1]}"},
            {"Authorization": f"Bearer {read[:20]}"},
            {"Authorization": f"Bearer {read}x"},
            {"Authorization": f"Bearer {read} {read}"},
            {"Authorization": f"Bearer {_tamper(read)}"},
            {"Authorization": f"Bearer {read.replace('ef_read_', 'ef_admin_')}"},
            {"Authorization": f"Bearer {read.upper()}"},
            {"Authorization": "Bearer ef_admin_" + "A" * 38},
            {"Authorization": "Bearer " + "x" * 6000},
            {"Authorization": "Bearer ef_admin_' OR '1'='1"},
            {"Authorization": "Bearer ../../etc/passwd"},
            {"Authorization": f"Bearer {generate_key('admin')}"},  # well formed, unknown
        ]
        for headers in bad_headers:
            _error_shaped(await c.get("/api/servers", headers=headers), 401)
        _error_shaped(await c.get("/api/servers", params={"api_key": read}), 401)
        keys_seen.append(read.replace("ef_read_", "ef_admin_"))

        # Wrong scope: the stored scope counts, 403 in the error shape.
        _error_shaped(await c.get("/api/keys", headers=auth(created["read"])), 403)
        _error_shaped(await c.get("/api/keys", headers=auth(created["write"])), 403)
        _error_shaped(await c.post("/api/keys", headers=auth(created["read"]), json={}), 403)
        _error_shaped(
            await c.delete(f"/api/keys/{ids['read']}", headers=auth(created["write"])), 403
        )

        # Bounded brute force: random well-formed keys (valid checksum) and random strings.
        rng = secrets.SystemRandom()
        statuses: set[int] = set()
        for i in range(BRUTE_FORCE_ATTEMPTS):
            if i % 2:
                guess = generate_key(rng.choice(["read", "write", "admin"]))
            else:
                guess = "ef_admin_" + "".join(rng.choice(ALPHABET) for _ in range(38))
            keys_seen.append(guess)
            statuses.add((await c.get("/api/keys", headers=auth(guess))).status_code)
        assert statuses == {401}
        assert (await c.get("/api/keys", headers=auth(root_admin))).status_code == 200

        # Revoked: refused from the next request on (this server caches keys for 0 s).
        r = await c.delete(f"/api/keys/{ids['write']}", headers=auth(root_admin))
        assert r.status_code == 200 and r.json()["api_key"]["revoked_at"]
        _error_shaped(await c.get("/api/servers", headers=auth(created["write"])), 401)
        _error_shaped(await c.post("/api/keys", headers=auth(created["write"]), json={}), 401)

    # No key, no key hash, no key body (a truncated key is still material) in any log line.
    await asyncio.sleep(0.5)  # let the server flush its last lines
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) > BRUTE_FORCE_ATTEMPTS  # one line per request at least: we read the log
    for line in lines:
        if line.startswith("{"):
            json.loads(line)  # structured
    for key in keys_seen:
        body = key.split("_", 2)[-1]
        for needle in (key, hash_key(key), body[:16], body[-16:]):
            assert needle not in text, f"key material {needle[:6]}... found in the server log"


async def test_revoked_key_refused_at_once_with_default_cache(
    client: httpx.AsyncClient, make_key: KeyFactory
) -> None:
    admin = await make_key("admin")
    victim = await make_key("read")
    assert (await client.get("/api/servers", headers=auth(victim))).status_code == 200
    listing = (await client.get("/api/keys", headers=auth(admin))).json()["keys"]
    victim_id = next(
        k["id"] for k in listing if k["last4"] == victim[-4:] and k["revoked_at"] is None
    )
    assert (await client.delete(f"/api/keys/{victim_id}", headers=auth(admin))).status_code == 200
    _error_shaped(await client.get("/api/servers", headers=auth(victim)), 401)


def test_secret_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The only secret compared in Python is the key checksum; keys are looked up by SHA-256."""
    calls: list[tuple[str, str]] = []
    real = secrets.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api.keys.secrets, "compare_digest", spy)
    key = generate_key("read")
    assert is_well_formed(key)
    assert not is_well_formed(_tamper(key))
    assert calls, "the checksum is not compared with secrets.compare_digest"
    source = inspect.getsource(api.security.authenticate)
    assert "hash_key(token)" in source  # the raw key is never compared, only its hash looked up
    assert "== token" not in source and "token ==" not in source
