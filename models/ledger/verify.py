"""The offline verifier: checks a ledger with nothing but RFC 9162, C2SP notes and RFC 8785.

Deliberately independent of the writer (it shares only the canonical JSON encoder): its own
hash functions, its own streaming tree, and the proof checks transcribed from RFC 9162 sections
2.1.3.2 (inclusion) and 2.1.4.2 (consistency). It needs no database and no service.

Export file (``execflow audit export``): JSON Lines. Line 1 is a header object
``{"format", "origin", "verifier_key", "verifier_keys", "public_key", "tree_size",
"checkpoints": [note, ...]}``; each following line is one entry's canonical JSON, exactly the
bytes its leaf hash covers. ``verifier_key`` is the current signing key, ``verifier_keys`` the
whole keyring (every key that ever signed a checkpoint of this log, after key rotations).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from models.ledger.canonical import canonical_json

EXPORT_FORMAT = "execflow-audit-export/1"
ZERO_HASH = "0" * 64
_sha256 = hashlib.sha256


def _sorted_json(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class VerificationError(Exception):
    """A proof, signature or log that does not verify."""


class EntryError(VerificationError):
    """An entry that does not verify; ``seq`` is the first entry that may have been altered."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq


# --- RFC 9162 section 2.1.1: the hashes ------------------------------------------------------


def hash_leaf(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


# --- RFC 9162 section 2.1.3.2: verifying an inclusion proof ----------------------------------


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, proof: list[bytes], root: bytes
) -> bool:
    """True when ``proof`` shows ``leaf`` (a leaf hash) at ``leaf_index`` of the tree ``root``."""
    if not 0 <= leaf_index < tree_size or any(len(p) != 32 for p in proof):
        return False
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hash_children(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# --- RFC 9162 section 2.1.4.2: verifying a consistency proof ---------------------------------


def verify_consistency(
    first: int, second: int, first_hash: bytes, second_hash: bytes, proof: list[bytes]
) -> bool:
    """True when ``proof`` shows the tree ``second_hash`` extends the tree ``first_hash``."""
    if not 0 <= first <= second or any(len(p) != 32 for p in proof):
        return False
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # first is an exact power of two
        path.insert(0, first_hash)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = hash_children(c, fr)
            sr = hash_children(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = hash_children(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


# --- C2SP signed-note and tlog-checkpoint ----------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root_hash: bytes
    text: str  # the signed body, ending in a newline
    signer: str = ""  # the verifier key whose signature was accepted


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key hash of a C2SP Ed25519 note key: SHA-256(name || 0x0A || 0x01 || key)."""
    return _sha256(name.encode() + b"\n\x01" + public_key).digest()[:4]


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """``<name>+<hex key id>+<base64(0x01 || public key)>`` -> (name, raw public key)."""
    name, hex_id, encoded = vkey.split("+", 2)
    raw = base64.b64decode(encoded, validate=True)
    if len(raw) != 33 or raw[0] != 1 or key_id(name, raw[1:]).hex() != hex_id:
        raise VerificationError("malformed Ed25519 verifier key")
    return name, raw[1:]


def verifier_key_of(name: str, public_key: bytes) -> str:
    """The note verifier key ``<name>+<hex key id>+<base64(0x01 || key)>``."""
    encoded = base64.b64encode(b"\x01" + public_key).decode()
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


class Keyring:
    """The Ed25519 keys trusted to sign checkpoints: the current key and every retired one.

    A checkpoint verifies when it carries a valid signature by any key in the ring; the
    accepted key is named in the result (``Checkpoint.signer``).
    """

    def __init__(self, verifier_keys: Iterable[str] = ()) -> None:
        self.keys: dict[tuple[str, bytes], bytes] = {}
        self.order: list[str] = []
        for vkey in verifier_keys:
            self.add(vkey)

    def add(self, vkey: str) -> None:
        name, public = parse_verifier_key(vkey.strip())
        ident = (name, key_id(name, public))
        if ident not in self.keys:
            self.keys[ident] = public
            self.order.append(verifier_key_of(name, public))

    def __contains__(self, public_key: object) -> bool:
        return public_key in self.keys.values()

    def __len__(self) -> int:
        return len(self.keys)

    def verify(self, note: str) -> Checkpoint:
        """Check ``note`` against every key in the ring (by name and key id)."""
        if not self.keys:
            raise VerificationError("no trusted keys to verify the checkpoint with")
        signers = _signature_lines(note)
        for signer, raw in signers:
            public = self.keys.get((signer, raw[:4]))
            if public is not None:
                return verify_checkpoint(note, signer, public)
        named = ", ".join(f"{s}+{raw[:4].hex()}" for s, raw in signers) or "none"
        raise VerificationError(
            f"checkpoint is signed by no key in the keyring (signed by: {named})"
        )


def _signature_lines(note: str) -> list[tuple[str, bytes]]:
    _, _, signatures = note.partition("\n\n")
    found = []
    for line in signatures.split("\n"):
        if not line.startswith("\u2014 "):
            continue
        signer, _, encoded = line[2:].rpartition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if len(raw) == 68:
            found.append((signer, raw))
    return found


def verify_checkpoint(note: str, name: str, public_key: bytes) -> Checkpoint:
    """Check a signed checkpoint note against one key; return what it commits to."""
    body, sep, signatures = note.partition("\n\n")
    if not sep or not body:
        raise VerificationError("not a signed note: no blank line before the signatures")
    text = body + "\n"
    lines = body.split("\n")
    if len(lines) < 3:
        raise VerificationError("checkpoint needs origin, tree size and root hash lines")
    origin, size_line, root_line = lines[:3]
    if not size_line.isdigit() or (size_line != "0" and size_line.startswith("0")):
        raise VerificationError("checkpoint tree size is not a decimal number")
    root = base64.b64decode(root_line, validate=True)
    if len(root) != 32:
        raise VerificationError("checkpoint root hash is not 32 bytes")
    wanted_id = key_id(name, public_key)
    verifier = Ed25519PublicKey.from_public_bytes(public_key)
    for line in signatures.split("\n"):
        if not line.startswith("\u2014 "):
            continue
        signer, _, encoded = line[2:].rpartition(" ")
        raw = base64.b64decode(encoded)
        if signer != name or raw[:4] != wanted_id:
            continue
        try:
            verifier.verify(raw[4:], text.encode())
        except InvalidSignature as exc:
            raise VerificationError(f"bad signature by {name} on the checkpoint") from exc
        return Checkpoint(origin, int(size_line), root, text, verifier_key_of(name, public_key))
    raise VerificationError(f"checkpoint carries no signature by {name}")


# --- the whole log ---------------------------------------------------------------------------


@dataclass
class Problem:
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.reason}"


@dataclass
class Report:
    tree_size: int = 0
    root_hash: bytes = b""
    problem: Problem | None = None
    checkpoints: int = 0
    notes: list[str] = field(default_factory=list)
    signers: dict[str, int] = field(default_factory=dict)  # verifier key -> checkpoints it signed

    @property
    def ok(self) -> bool:
        return self.problem is None


class LogChecker:
    """Feeds entries in order and checks each: canonical form, sequence, chain, leaf.

    Keeps only the right edge of the tree, so memory stays O(log n); roots at the sizes named in
    ``want_roots`` are remembered as the stream passes them.
    """

    def __init__(self, want_roots: Iterable[int] = ()) -> None:
        self.size = 0
        self.prev = ZERO_HASH
        self.leaves: list[bytes] | None = None
        self._edge: list[bytes] = []  # complete subtrees on the right edge, tallest first
        self._want = set(want_roots)
        self.roots: dict[int, bytes] = {0: _sha256(b"").digest()} if 0 in self._want else {}

    def add(self, body: bytes) -> bytes:
        """Check the next entry's bytes; return its leaf hash. Raises ``VerificationError``."""
        seq = self.size
        try:
            entry = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise EntryError(seq, "entry is not valid JSON") from exc
        if not isinstance(entry, dict):
            raise EntryError(seq, "entry is not a JSON object")
        if entry.get("seq") != seq:
            raise EntryError(seq, f"entry says seq {entry.get('seq')!r}, expected {seq}")
        if entry.get("prev_hash") != self.prev:
            # Entry seq-1 was altered, or this entry's record of it was: name the earlier one.
            raise EntryError(
                seq - 1, f"entry {seq - 1} does not hash to the prev_hash recorded by entry {seq}"
            )
        # ASCII-only bodies cannot hold the non-BMP keys where orjson's order differs from RFC 8785
        canonical = _sorted_json(entry) if body.isascii() else canonical_json(entry)
        if canonical != body:
            raise EntryError(seq, "entry is not in RFC 8785 canonical form")
        leaf = _sha256(b"\x00" + body).digest()  # hash_leaf, inlined: this loop is the hot path
        self._push(leaf)
        self.prev = leaf.hex()
        return leaf

    def _push(self, leaf: bytes) -> None:
        # Leaf number ``size`` completes one subtree per trailing one-bit of ``size``.
        edge, h, size = self._edge, leaf, self.size
        while size & 1:
            h = _sha256(b"\x01" + edge.pop() + h).digest()
            size >>= 1
        edge.append(h)
        self.size += 1
        if self.size in self._want:
            self.roots[self.size] = self.root()

    def root(self) -> bytes:
        if not self._edge:
            return _sha256(b"").digest()
        h = self._edge[-1]
        for left in reversed(self._edge[:-1]):
            h = hash_children(left, h)
        return h


def check_checkpoints(
    checker: LogChecker, checkpoints: list[Checkpoint], origin: str | None, report: Report
) -> None:
    """Each checkpoint must describe a prefix of the verified log (which makes each consistent
    with every earlier one); the first that does not names where the log and it part ways."""
    good = 0
    for cp in sorted(checkpoints, key=lambda c: c.tree_size):
        if origin is not None and cp.origin != origin:
            report.problem = Problem(good, f"checkpoint origin {cp.origin!r} is not {origin!r}")
            return
        if cp.tree_size > checker.size:
            report.problem = Problem(
                checker.size,
                f"log has {checker.size} entries but a checkpoint was signed at size "
                f"{cp.tree_size}: entries {checker.size}..{cp.tree_size - 1} are missing "
                "(rolled back or deleted)",
            )
            return
        if checker.roots.get(cp.tree_size) != cp.root_hash:
            report.problem = Problem(
                good,
                f"signed checkpoint at size {cp.tree_size} does not match entries "
                f"{good}..{cp.tree_size - 1} (forked or rewritten log)",
            )
            return
        good = cp.tree_size
        report.checkpoints += 1
        report.signers[cp.signer] = report.signers.get(cp.signer, 0) + 1


def read_export(path: Path) -> tuple[dict, Iterator[bytes]]:
    """The header and an iterator over the entry lines of an export file."""
    handle = path.open("rb")
    header_line = handle.readline()
    try:
        header = orjson.loads(header_line)
    except orjson.JSONDecodeError as exc:
        handle.close()
        raise VerificationError("export header is not JSON") from exc
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        handle.close()
        raise VerificationError(f"not an {EXPORT_FORMAT} file")

    def lines() -> Iterator[bytes]:
        with handle:
            for line in handle:
                yield line.rstrip(b"\n")

    return header, lines()


def read_keyring(path: Path) -> list[str]:
    """Verifier keys from a keyring file: one per line; blank lines and ``#`` comments skipped."""
    keys = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            keys.append(line)
    return keys


def verify_export(
    path: Path,
    *,
    verifier_key: str | Iterable[str] | None = None,
    trusted: list[str] | None = None,
) -> Report:
    """Verify an export file offline.

    ``verifier_key`` pins the signing key or keys (``<name>+<id>+<key>``, from GET
    /api/audit-log/checkpoint or the keyring file); each checkpoint must be signed by one of
    them. Without it the keys in the file's header are used, which proves integrity against
    those keys only. ``trusted`` are checkpoint notes saved earlier: the export must extend
    each of them.
    """
    header, lines = read_export(path)
    if verifier_key is None:
        pinned = header.get("verifier_keys") or [header["verifier_key"]]
    elif isinstance(verifier_key, str):
        pinned = [verifier_key]
    else:
        pinned = list(verifier_key)
    keyring = Keyring(pinned)
    checkpoints = [keyring.verify(n) for n in header.get("checkpoints", [])]
    checkpoints += [keyring.verify(n) for n in trusted or []]
    checker = LogChecker(cp.tree_size for cp in checkpoints)
    report = Report()
    for body in lines:
        try:
            checker.add(body)
        except EntryError as exc:
            report.problem = Problem(exc.seq, str(exc))
            break
    report.tree_size, report.root_hash = checker.size, checker.root()
    if report.problem is None and checker.size != header.get("tree_size"):
        report.problem = Problem(
            checker.size,
            f"header says {header.get('tree_size')} entries, file holds {checker.size}",
        )
    if report.problem is None:
        check_checkpoints(checker, checkpoints, header.get("origin"), report)
    if report.problem is None and not any(cp.tree_size == checker.size for cp in checkpoints):
        report.notes.append("no signed checkpoint covers the whole file")
    return report
