"""The checkpoint signing key and C2SP tlog-checkpoint signed notes.

The key file uses the Go ``note`` private-key encoding,
``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || Ed25519 seed)>``; the matching verifier key
is ``<name>+<hex key id>+<base64(0x01 || public key)>``. It is generated on first use, 0600,
into ``EXECFLOW_LEDGER_KEY_PATH`` (default ``<data dir>/ledger.key``).
"""

from __future__ import annotations

import base64
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
from models.ledger.verify import key_id

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
        encoded = base64.b64encode(b"\x01" + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

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


_cache: dict[Path, Signer] = {}


def load_signer(path: Path, name: str) -> Signer:
    """The signing key at ``path``, created (0600, race-free across processes) if absent."""
    if path in _cache:
        return _cache[path]
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        write_private_file(tmp, encode_private_key(name, Ed25519PrivateKey.generate()).encode())
        try:
            os.link(tmp, path)  # atomic: the first process to get here wins, others read its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    _cache[path] = decode_private_key(path.read_text())
    return _cache[path]


def reset_cache() -> None:
    _cache.clear()
