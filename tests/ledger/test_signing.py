"""C2SP signed-note checkpoints: format, key id, signature, key file handling."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import pytest

from models.ledger.signing import decode_private_key, load_signer, reset_cache
from models.ledger.verify import (
    VerificationError,
    key_id,
    parse_verifier_key,
    verify_checkpoint,
)


@pytest.fixture
def signer(tmp_path):
    reset_cache()
    yield load_signer(tmp_path / "keys" / "ledger.key", "example.com/log")
    reset_cache()


def test_key_file_is_private_and_stable(tmp_path, signer) -> None:
    path = tmp_path / "keys" / "ledger.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    reset_cache()
    again = load_signer(path, "ignored-name")  # the file's name wins once it exists
    assert again.public_key == signer.public_key and again.name == "example.com/log"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
    assert decode_private_key(path.read_text()).key_id == signer.key_id


def test_key_id_is_sha256_of_name_newline_type_key(signer) -> None:
    expected = hashlib.sha256(b"example.com/log\n\x01" + signer.public_key).digest()[:4]
    assert signer.key_id == expected == key_id("example.com/log", signer.public_key)
    name, raw = parse_verifier_key(signer.verifier_key)
    assert name == "example.com/log" and raw == signer.public_key


def test_checkpoint_note_format_and_signature(signer) -> None:
    root = hashlib.sha256(b"root").digest()
    note = signer.sign_checkpoint("example.com/log", 42, root)
    body, signature = note.split("\n\n")
    assert body == f"example.com/log\n42\n{base64.b64encode(root).decode()}"
    assert signature.startswith("\u2014 example.com/log ") and signature.endswith("\n")
    raw = base64.b64decode(signature.split(" ")[-1])
    assert raw[:4] == signer.key_id and len(raw) == 68
    checkpoint = verify_checkpoint(note, signer.name, signer.public_key)
    assert (checkpoint.origin, checkpoint.tree_size, checkpoint.root_hash) == (
        "example.com/log",
        42,
        root,
    )


def test_tampered_or_foreign_checkpoints_fail(signer, tmp_path) -> None:
    note = signer.sign_checkpoint("example.com/log", 42, hashlib.sha256(b"r").digest())
    with pytest.raises(VerificationError):
        verify_checkpoint(note.replace("\n42\n", "\n43\n"), signer.name, signer.public_key)
    reset_cache()
    other = load_signer(tmp_path / "other.key", "example.com/log")
    with pytest.raises(VerificationError):
        verify_checkpoint(note, other.name, other.public_key)
    with pytest.raises(VerificationError):
        verify_checkpoint("not a note", signer.name, signer.public_key)


def test_replaced_key_file_is_picked_up_and_keyring_trusts_both(tmp_path) -> None:
    from models.ledger.signing import load_keyring, rotate

    reset_cache()
    path, ring_path = tmp_path / "ledger.key", tmp_path / "ledger.keyring"
    old = load_signer(path, "example.com/log")
    note = old.sign_checkpoint("example.com/log", 7, b"\x01" * 32)
    retired, new = rotate(path, ring_path, "example.com/log")
    assert retired.public_key == old.public_key
    assert load_signer(path, "example.com/log").public_key == new.public_key != old.public_key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    ring = load_keyring(ring_path)
    assert ring.verify(note).signer == old.verifier_key
    fresh = new.sign_checkpoint("example.com/log", 8, b"\x02" * 32)
    assert ring.verify(fresh).signer == new.verifier_key
    rotate(path, ring_path, "example.com/log")  # a second rotation appends, keeps the first two
    assert len(load_keyring(ring_path)) == 3 and old.public_key in load_keyring(ring_path)
    stranger = load_signer(tmp_path / "other.key", "example.com/log")
    with pytest.raises(VerificationError, match="no key in the keyring"):
        ring.verify(stranger.sign_checkpoint("example.com/log", 7, b"\x01" * 32))
    reset_cache()
