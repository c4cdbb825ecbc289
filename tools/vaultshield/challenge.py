"""The proof-of-work challenge: SHA-256 with leading zero bits, verified with one hash.

A challenge token is ``site|client|expiry|nonce`` signed with HMAC; the browser finds an answer
``n`` such that SHA-256(token + ":" + n) starts with ``difficulty`` zero bits, and posts it back.
The proxy checks the signature, the client address, the expiry and the hash, marks the token
used (once only), and sets a pass cookie ``site.expiry.signature`` whose signature covers the
client address, so a copied cookie is worthless from another address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import math
import secrets
import time
from collections.abc import Awaitable, Callable

from models.settings import get_settings

VERIFY_PATH = "/.well-known/vaultshield/verify"
COOKIE_NAME = "vaultshield_pass"
ClaimOnce = Callable[[str, float], Awaitable[bool]]
# Sentry V's probes carry a short-lived pass for the site they probe, so that shield mode (which
# challenges every visitor) does not make the site look down to its own monitor. The proxy
# honours it like a solved challenge (block rules still apply) and strips it before forwarding.
PROBE_HEADER = "x-execflow-probe"
PROBE_TTL = 120.0


def _mac(secret: bytes, text: str) -> str:
    mac = hmac.new(secret, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


def probe_pass(secret: bytes, site_id: int, now: float | None = None) -> str:
    """``site.expiry.signature``: what a Sentry probe of ``site_id`` sends in PROBE_HEADER."""
    expires = int((time.time() if now is None else now) + PROBE_TTL)
    return f"{site_id}.{expires}.{_mac(secret, f'probe|{site_id}|{expires}')}"


def shield_secret() -> bytes:
    """A key derived from the data dir's secret key, so every proxy of a deployment agrees."""
    path = get_settings().secret_key_path
    assert path is not None
    if not path.exists():
        from models.crypto import encrypt_secret

        encrypt_secret("")  # creates the key file with the right permissions
    return hashlib.sha256(b"vaultshield\x00" + path.read_bytes().strip()).digest()


def leading_zero_bits(digest: bytes) -> int:
    bits = 0
    for byte in digest:
        if byte == 0:
            bits += 8
            continue
        return bits + 8 - byte.bit_length()
    return bits


def solve(token: str, difficulty: int, limit: int = 50_000_000) -> int:
    """Find an answer (what the page's script does; tests and benchmarks use it)."""
    prefix = token.encode() + b":"
    for n in range(limit):
        if leading_zero_bits(hashlib.sha256(prefix + str(n).encode()).digest()) >= difficulty:
            return n
    raise RuntimeError("no answer found")


class MemoryOnce:
    """Single-use tokens in this process (Redis ``SET NX`` replaces it across proxies)."""

    def __init__(self) -> None:
        self._used: dict[str, float] = {}

    async def __call__(self, token: str, expires: float) -> bool:
        now = time.time()
        if len(self._used) > 100_000:
            self._used = {k: v for k, v in self._used.items() if v > now}
        if token in self._used:
            return False
        self._used[token] = expires
        return True


class Challenger:
    def __init__(
        self,
        secret: bytes,
        *,
        site_id: int,
        difficulty: int,
        claim_once: ClaimOnce | None = None,
        token_ttl: float = 300.0,
        pass_ttl: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.site_id = site_id
        self.difficulty = difficulty
        self.claim_once = claim_once or MemoryOnce()
        self.token_ttl = token_ttl
        self.pass_ttl = pass_ttl
        self.clock = clock

    def _sign(self, text: str) -> str:
        return _mac(self.secret, text)

    def issue(self, client_ip: str) -> str:
        expires = int(self.clock() + self.token_ttl)
        nonce = secrets.token_urlsafe(12)
        body = f"{self.site_id}.{self.difficulty}.{expires}.{nonce}"
        return f"{body}.{self._sign(f'c|{client_ip}|{body}')}"

    async def verify(self, token: str, answer: str, client_ip: str) -> bool:
        """True once per valid, unexpired, correctly solved token issued to this client."""
        parts = token.split(".")
        if len(parts) != 5 or not answer.isdigit() or len(answer) > 20:
            return False
        site, difficulty, expires, _nonce, signature = parts
        body = ".".join(parts[:4])
        expected = self._sign(f"c|{client_ip}|{body}")
        if not hmac.compare_digest(signature, expected) or site != str(self.site_id):
            return False
        if not expires.isdigit() or int(expires) < self.clock():
            return False
        digest = hashlib.sha256(f"{token}:{answer}".encode()).digest()
        if leading_zero_bits(digest) < int(difficulty):
            return False
        return await self.claim_once(token, float(expires))

    def pass_cookie(self, client_ip: str) -> str:
        expires = int(self.clock() + self.pass_ttl)
        return f"{self.site_id}.{expires}.{self._sign(f'p|{client_ip}|{self.site_id}|{expires}')}"

    def _check_expiring(
        self, value: str | None, signed: Callable[[str], str], latest: float = math.inf
    ) -> bool:
        """``site.expiry.signature`` for this site, unexpired, expiring no later than ``latest``
        seconds from now, and signed over ``signed(expiry)``."""
        if not value:
            return False
        parts = value.split(".")
        if len(parts) != 3 or parts[0] != str(self.site_id) or not parts[1].isdigit():
            return False
        now = self.clock()
        if not now <= int(parts[1]) <= now + latest:
            return False
        return hmac.compare_digest(parts[2], self._sign(signed(parts[1])))

    def check_pass(self, cookie: str | None, client_ip: str) -> bool:
        return self._check_expiring(cookie, lambda exp: f"p|{client_ip}|{self.site_id}|{exp}")

    def check_probe(self, value: str | None) -> bool:
        """A valid, unexpired Sentry probe pass for this site (not one minted far ahead)."""
        return self._check_expiring(
            value, lambda exp: f"probe|{self.site_id}|{exp}", latest=PROBE_TTL + 5
        )

    def page(self, client_ip: str, next_path: str) -> str:
        token = self.issue(client_ip)
        return _PAGE.format(
            token=html.escape(token),
            difficulty=self.difficulty,
            verify=VERIFY_PATH,
            next=html.escape(next_path),
        )


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Checking your browser</title></head>
<body><h1>Checking your browser&hellip;</h1>
<p>This site is protected by VaultShield. Your browser is solving a small puzzle.</p>
<form id="vs" method="post" action="{verify}">
<input type="hidden" name="token" value="{token}">
<input type="hidden" name="answer" value="">
<input type="hidden" name="next" value="{next}">
<noscript><p>JavaScript is required to continue.</p></noscript>
</form>
<script>
(async () => {{
  const form = document.getElementById("vs");
  const token = form.token.value, need = {difficulty}, enc = new TextEncoder();
  const zeros = (b) => {{ let n = 0; for (const x of b) {{
      if (x === 0) {{ n += 8; continue; }} return n + Math.clz32(x) - 24; }} return n; }};
  for (let n = 0; ; n++) {{
    const d = new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(token + ":" + n)));
    if (zeros(d) >= need) {{ form.answer.value = String(n); form.submit(); return; }}
  }}
}})();
</script></body></html>
"""
