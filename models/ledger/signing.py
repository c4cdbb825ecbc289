"""The checkpoint signing key and C2SP tlog-checkpoint signed notes.

The key file uses the Go ``note`` private-key encoding,
``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || Ed25519 seed)>``; the matching verifier key
is ``<name>+<hex key id>+<base64(0x01 || public key)>``. It is generated on first use, 0600,
into ``EXECFLOW_LEDGER_KEY_PATH`` (default ``<data dir>/ledger.key``).

Key rotation (``rotate``) keeps every retired public key in the keyring file
``EXECFLOW_LEDGER_KEYRING_PATH`` (default ``<data dir>/ledger.keyring``): one verifier key per
line, ``#`` comments allowed. The trusted keys are the keyring's plus the current key, so
checkpoints (and CompactEdge certificates) signed before a rotation keep verifying. A process
notices a rotated key file on its next signature (the cache is keyed by the file's identity).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from models.crypto import write_private_file
from models.errors import ExecFlowError
from models.ledger.verify import Keyring, key_id, read_keyring, verifier_key_of

_PREFIX = "PRIVATE+KEY+"


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @property
    def verifier_key(self) -> str:
        return verifier_key_of(self.name, self.public_key)

    def sign_checkpoint(self, origin: str, tree_size: int, root_hash: bytes) -> str:
        """A C2SP tlog-checkpoint: the body, a blank line, one Ed25519 signature line."""
        body = f"{origin}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n"
        signature = self.private_key.sign(body.encode())
        line = base64.b64encode(self.key_id + signature).decode()
        return f"{body}\n\u2014 {self.name} {line}\n"


def encode_private_key(name: str, key: Ed25519PrivateKey) -> str:
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    encoded = base64.b64encode(b"\x01" + seed).decode()
    return f"{_PREFIX}{name}+{key_id(name, public).hex()}+{encoded}"


def decode_private_key(text: str) -> Signer:
    text = text.strip()
    if not text.startswith(_PREFIX):
        raise ExecFlowError("ledger key file is not a PRIVATE+KEY+<name>+<id>+<key> note key")
    name, hex_id, encoded = text[len(_PREFIX) :].split("+", 2)
    raw = base64.b64decode(encoded)
    if len(raw) != 33 or raw[0] != 1:
        raise ExecFlowError("ledger key file does not hold an Ed25519 key")
    signer = Signer(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
    if signer.key_id.hex() != hex_id:
        raise ExecFlowError("ledger key file: key id does not match the key")
    return signer


# path -> (file identity, signer): a key file replaced by a rotation is picked up at once.
_cache: dict[Path, tuple[tuple[int, int, int], Signer]] = {}


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def load_signer(path: Path, name: str) -> Signer:
    """The signing key at ``path``, created (0600, race-free across processes) if absent."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        write_private_file(tmp, encode_private_key(name, Ed25519PrivateKey.generate()).encode())
        try:
            os.link(tmp, path)  # atomic: the first process to get here wins, others read its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    identity = _identity(path)
    cached = _cache.get(path)
    if cached is not None and cached[0] == identity:
        return cached[1]
    signer = decode_private_key(path.read_text())
    _cache[path] = (identity, signer)
    return signer


def reset_cache() -> None:
    _cache.clear()


def load_keyring(keyring_path: Path | None, current: Signer | None = None) -> Keyring:
    """The trusted keys: every verifier key in the keyring file, plus ``current``."""
    ring = Keyring(read_keyring(keyring_path) if keyring_path and keyring_path.exists() else ())
    if current is not None:
        ring.add(current.verifier_key)
    return ring


def _replace_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (0600, fsynced): readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    write_private_file(tmp, data)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def rotate(path: Path, keyring_path: Path, name: str) -> tuple[Signer, Signer]:
    """Make a new signing key current; keep the old and new public keys in the keyring.

    The keyring is written first (so the new key is trusted before anything is signed with
    it), then the key file is replaced atomically. The old private key is not kept. Returns
    ``(old, new)``.
    """
    old = load_signer(path, name)
    new = Signer(old.name, Ed25519PrivateKey.generate())
    existing = read_keyring(keyring_path) if keyring_path.exists() else []
    ring = Keyring(existing)
    lines = [] if keyring_path.exists() else ["# ExecFlow ledger keyring: trusted verifier keys\n"]
    text = keyring_path.read_text() if keyring_path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    for signer in (old, new):
        if signer.public_key not in ring:
            lines.append(f"{signer.verifier_key}  # added {_now()}\n")
    _replace_file(keyring_path, (text + "".join(lines)).encode())
    _replace_file(path, encode_private_key(new.name, new.private_key).encode())
    return old, new


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
