"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with rotation through MultiFernet.

The key file holds one key per line, newest first; encryption uses the first, decryption tries
all, so a rotated key keeps old ciphertexts readable until they are re-encrypted.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from models.errors import ExecFlowError
from models.settings import get_settings

_cache: dict[Path, MultiFernet] = {}


def _key_path() -> Path:
    path = get_settings().secret_key_path
    assert path is not None
    return path


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with 0600 permissions (never world- or group-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _fernet() -> MultiFernet:
    path = _key_path()
    if path not in _cache:
        if not path.exists():
            write_private_file(path, Fernet.generate_key() + b"\n")
        keys = [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
        _cache[path] = MultiFernet([Fernet(k) for k in keys])
    return _cache[path]


def encrypt_secret(plaintext: str) -> str:
    """Encrypt a secret for storage."""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    """Decrypt a stored secret; a wrong key is an error, never garbage."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ExecFlowError("stored secret cannot be decrypted with the configured key") from exc


def reset_cache() -> None:
    _cache.clear()
