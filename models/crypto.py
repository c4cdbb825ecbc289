"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with rotation through MultiFernet.

The key file holds one key per line, newest first; encryption uses the first, decryption tries
all, so a rotated key keeps old ciphertexts readable until they are re-encrypted.

Every column that holds a ciphertext registers itself with ``encrypted_column(Model.attr)``
right after its model class; ``rotate_key`` (``execflow secrets rotate``) then re-encrypts all
of them under a new key, and ``drop_old_keys`` removes the old keys once nothing needs them.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from models.errors import ExecFlowError
from models.settings import get_settings

# (path, mtime_ns, size) -> keys: a key file rewritten by a rotation is picked up at once.
_cache: dict[tuple[Path, int, int], MultiFernet] = {}


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


def _replace_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` (0600): readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_private_file(tmp, data)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_keys(path: Path | None = None) -> list[bytes]:
    """The keys in the key file, newest first (creating the file with one key if missing)."""
    path = path or _key_path()
    if not path.exists():
        _create_key_file(path)
    return [line.strip() for line in path.read_bytes().splitlines() if line.strip()]


def _create_key_file(path: Path) -> None:
    """Create the key file once, even when processes sharing the data dir start together: the
    key is written under a temporary name and linked into place, so the first link wins and the
    others read its key (one writing over another would orphan what the other encrypted)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    write_private_file(tmp, Fernet.generate_key() + b"\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def _write_keys(path: Path, keys: list[bytes]) -> None:
    _replace_private_file(path, b"".join(k + b"\n" for k in keys))


def _fernet() -> MultiFernet:
    path = _key_path()
    if not path.exists():
        read_keys(path)
    stat = path.stat()
    cache_key = (path, stat.st_mtime_ns, stat.st_size)
    fernet = _cache.get(cache_key)
    if fernet is None:
        fernet = MultiFernet([Fernet(k) for k in read_keys(path)])
        for stale in [k for k in _cache if k[0] == path]:
            del _cache[stale]
        _cache[cache_key] = fernet
    return fernet


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


# --- the registry of encrypted columns and key rotation --------------------------------------

ENCRYPTED_COLUMNS: list[InstrumentedAttribute[Any]] = []


def encrypted_column(attribute: InstrumentedAttribute[Any]) -> InstrumentedAttribute[Any]:
    """Register ``Model.column`` as holding ``encrypt_secret`` tokens (or NULL)."""
    if not any(attribute is known for known in ENCRYPTED_COLUMNS):
        ENCRYPTED_COLUMNS.append(attribute)
    return attribute


def column_label(attribute: InstrumentedAttribute[Any]) -> str:
    return f"{attribute.class_.__tablename__}.{attribute.key}"


@dataclass
class RotationReport:
    key_count: int  # keys in the file after the rotation (new one first)
    reencrypted: dict[str, int]  # "table.column" -> rows re-encrypted
    dropped: int = 0  # old keys removed (with drop_old)


async def _reencrypt(
    session: AsyncSession, fernet: MultiFernet, batch: int = 500
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for attribute in ENCRYPTED_COLUMNS:
        model = attribute.class_
        (pk,) = model.__mapper__.primary_key
        done = 0
        last: Any = None
        while True:
            query = select(pk, attribute).where(attribute.is_not(None)).order_by(pk).limit(batch)
            if last is not None:
                query = query.where(pk > last)
            rows = (await session.execute(query)).all()
            if not rows:
                break
            for row_id, token in rows:
                try:
                    fresh = fernet.rotate(token.encode()).decode()
                except InvalidToken as exc:
                    raise ExecFlowError(
                        f"{column_label(attribute)} row {row_id} cannot be decrypted with any "
                        "configured key; nothing was changed"
                    ) from exc
                await session.execute(
                    update(model.__table__).where(pk == row_id).values({attribute.key: fresh})
                )
                done += 1
            last = rows[-1][0]
        counts[column_label(attribute)] = done
    return counts


async def _verify_with(session: AsyncSession, fernet: Fernet) -> None:
    for attribute in ENCRYPTED_COLUMNS:
        (pk,) = attribute.class_.__mapper__.primary_key
        rows = await session.execute(select(pk, attribute).where(attribute.is_not(None)))
        for row_id, token in rows:
            try:
                fernet.decrypt(token.encode())
            except InvalidToken as exc:
                raise ExecFlowError(
                    f"{column_label(attribute)} row {row_id} is not encrypted under the newest "
                    "key; old keys kept"
                ) from exc


async def rotate_key(session: AsyncSession, *, drop_old: bool = False) -> RotationReport:
    """Put a new key first in the key file, re-encrypt every registered column under it (one
    transaction), and with ``drop_old`` remove the old keys once every token verifies under the
    new one. A failure before the commit leaves every row as it was and the new key unused."""
    path = _key_path()
    old = read_keys(path)
    new = Fernet.generate_key()
    _write_keys(path, [new, *old])
    reset_cache()
    try:
        counts = await _reencrypt(session, MultiFernet([Fernet(k) for k in [new, *old]]))
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    report = RotationReport(key_count=len(old) + 1, reencrypted=counts)
    if drop_old:
        report.dropped = await drop_old_keys(session)
        report.key_count = 1
    return report


async def drop_old_keys(session: AsyncSession) -> int:
    """Keep only the newest key, after checking every stored token decrypts with it alone."""
    path = _key_path()
    keys = read_keys(path)
    await _verify_with(session, Fernet(keys[0]))
    if len(keys) > 1:
        _write_keys(path, keys[:1])
        reset_cache()
    return len(keys) - 1
