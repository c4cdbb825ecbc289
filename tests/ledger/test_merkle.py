"""The tree against RFC 9162 / transparency-dev known answers, a naive model and mutations."""

from __future__ import annotations

import functools
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from models.ledger import merkle
from models.ledger.verify import hash_leaf, verify_consistency, verify_inclusion

# transparency-dev/merkle testonly/constants.go (the RFC 6962 reference tree) and
# proof/verify_test.go.
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]  # fmt: skip
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip
INCLUSION = {  # (leaf index, tree size) -> proof
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}  # fmt: skip
CONSISTENCY = {  # (size1, size2) -> proof
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
    (6, 7): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}  # fmt: skip


class StoredTree:
    """The writer's storage model: a frontier plus every completed node in a dict."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.frontier = merkle.Frontier()
        self.nodes: dict[merkle.Node, bytes] = {}
        for data in leaves:
            self.add(data)

    def add(self, data: bytes) -> None:
        for level, idx, h in self.frontier.append(merkle.leaf_hash(data)):
            self.nodes[(level, idx)] = h

    def root(self, size: int) -> bytes:
        return merkle.hash_ranges([(0, size)], self.nodes)[0]

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return merkle.hash_ranges(merkle.inclusion_ranges(index, size), self.nodes)

    def consistency(self, old: int, new: int) -> list[bytes]:
        return merkle.hash_ranges(merkle.consistency_ranges(old, new), self.nodes)


# --- a naive model: RFC 9162 section 2.1 read literally, over the leaf data ------------------

DATA = [i.to_bytes(2, "big") for i in range(1024)]


@functools.cache
def mth(lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + DATA[lo]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi)).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def naive_path(m: int, lo: int, hi: int) -> tuple[tuple[int, int], ...]:
    """PATH(m, D[lo:hi]) as the leaf ranges whose MTH it lists."""
    if hi - lo == 1:
        return ()
    k = _split(hi - lo)
    if m < k:
        return (*naive_path(m, lo, lo + k), (lo + k, hi))
    return (*naive_path(m - k, lo + k, hi), (lo, lo + k))


@functools.cache
def naive_subproof(m: int, lo: int, hi: int, b: bool) -> tuple[tuple[int, int], ...]:
    """SUBPROOF(m, D[lo:hi], b) as leaf ranges."""
    if m == hi - lo:
        return () if b else ((lo, hi),)
    k = _split(hi - lo)
    if m <= k:
        return (*naive_subproof(m, lo, lo + k, b), (lo + k, hi))
    return (*naive_subproof(m - k, lo + k, hi, False), (lo, lo + k))


def naive_hashes(ranges: tuple[tuple[int, int], ...]) -> list[bytes]:
    return [mth(lo, hi) for lo, hi in ranges]


BIG = StoredTree(DATA)


# --- known answers ---------------------------------------------------------------------------


def test_known_roots_for_every_size() -> None:
    tree = StoredTree([])
    assert tree.frontier.root() == ROOTS[0]
    for size, data in enumerate(LEAVES, start=1):
        tree.add(data)
        assert tree.frontier.root() == ROOTS[size]
        assert tree.root(size) == ROOTS[size]
    assert merkle.leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


def test_known_inclusion_and_consistency_proofs() -> None:
    tree = StoredTree(LEAVES)
    for (index, size), proof in INCLUSION.items():
        assert [p.hex() for p in tree.inclusion(index, size)] == proof
        assert verify_inclusion(
            index, size, hash_leaf(LEAVES[index]), [bytes.fromhex(p) for p in proof], ROOTS[size]
        )
    for (old, new), proof in CONSISTENCY.items():
        assert [p.hex() for p in tree.consistency(old, new)] == proof
        assert verify_consistency(
            old, new, ROOTS[old], ROOTS[new], [bytes.fromhex(p) for p in proof]
        )


# --- exhaustive against the naive model --------------------------------------------------------


def test_roots_match_naive_for_every_size_to_1024() -> None:
    tree = StoredTree([])
    for size in range(1, 1025):
        tree.add(DATA[size - 1])
        assert tree.frontier.root() == mth(0, size)
        assert BIG.root(size) == mth(0, size)


def test_inclusion_proofs_match_naive_for_every_leaf_and_size_to_1024() -> None:
    for size in range(1, 1025):
        root = mth(0, size)
        for index in range(size):
            assert tuple(merkle.inclusion_ranges(index, size)) == naive_path(index, 0, size)
        for index in {0, size // 3, size // 2, size - 1}:  # hashes, and the verifier, per size
            proof = BIG.inclusion(index, size)
            assert proof == naive_hashes(naive_path(index, 0, size))
            assert verify_inclusion(index, size, hash_leaf(DATA[index]), proof, root)


def test_consistency_proofs_match_naive_for_every_pair_to_1024() -> None:
    for new in range(1, 1025):
        for old in range(1, new + 1):
            assert tuple(merkle.consistency_ranges(old, new)) == naive_subproof(old, 0, new, True)
        for old in {1, new // 3 or 1, new // 2 or 1, new - 1 or 1, new}:
            proof = BIG.consistency(old, new)
            assert proof == naive_hashes(naive_subproof(old, 0, new, True))
            assert verify_consistency(old, new, mth(0, old), mth(0, new), proof)


# --- properties: proofs verify; mutated proofs do not ------------------------------------------

sizes = st.integers(min_value=1, max_value=1024)


def _flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    mutated = list(proof)
    mutated[i] = bytes([mutated[i][0] ^ (1 << bit)]) + mutated[i][1:]
    return mutated


@settings(max_examples=300, deadline=None)
@given(size=sizes, data=st.data())
def test_inclusion_property(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    leaf, root = hash_leaf(DATA[index]), mth(0, size)
    proof = BIG.inclusion(index, size)
    assert verify_inclusion(index, size, leaf, proof, root)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        flipped = _flip(proof, i, data.draw(st.integers(0, 7)))
        assert not verify_inclusion(index, size, leaf, flipped, root)
        assert not verify_inclusion(index, size, leaf, proof[:-1], root)  # truncated
        assert not verify_inclusion(index, size, leaf, [*proof, root], root)  # extended
        assert not verify_inclusion(index, size, leaf, [root, *proof], root)
    wrong = data.draw(st.integers(0, 2 * size).filter(lambda j: j != index))
    assert not verify_inclusion(wrong, size, leaf, proof, root)  # wrong index
    assert not verify_inclusion(index, size * 2, leaf, proof, root)  # wrong size
    half = size // 2
    if index >= half or len(merkle.inclusion_ranges(index, half)) != len(proof):
        assert not verify_inclusion(index, half, leaf, proof, root)
    assert not verify_inclusion(index, size, hash_leaf(b"other"), proof, root)
    assert not verify_inclusion(index, size, leaf, proof, hashlib.sha256(b"x").digest())


@settings(max_examples=300, deadline=None)
@given(new=sizes, data=st.data())
def test_consistency_property(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new))
    r1, r2 = mth(0, old), mth(0, new)
    proof = BIG.consistency(old, new)
    assert verify_consistency(old, new, r1, r2, proof)
    if old == new:
        assert not verify_consistency(old, new, r1, hashlib.sha256(b"x").digest(), proof)
        return
    i = data.draw(st.integers(0, len(proof) - 1))
    assert not verify_consistency(old, new, r1, r2, _flip(proof, i, data.draw(st.integers(0, 7))))
    assert not verify_consistency(old, new, r1, r2, proof[:-1])  # truncated
    assert not verify_consistency(old, new, r1, r2, [*proof, r2])  # extended
    assert not verify_consistency(old, new, r2, r1, proof)  # swapped roots
    assert not verify_consistency(old, new, r1, hashlib.sha256(b"x").digest(), proof)
    assert not verify_consistency(old, new * 2, r1, r2, proof)  # wrong size
