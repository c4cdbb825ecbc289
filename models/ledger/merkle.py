"""RFC 9162 Merkle tree arithmetic over stored complete-subtree hashes.

A log of ``n`` leaves is stored as the hashes of its complete subtrees, keyed by ``(level,
index)``: node ``(l, k)`` covers leaves ``[k * 2**l, (k + 1) * 2**l)``. It is written once, when
its last leaf is appended, and never changes (the "stored hash" layout of Go's
``golang.org/x/mod/sumdb/tlog``). Every hash the RFC asks for is then a fold of a few stored
nodes: a root needs ``popcount(n)`` of them, an inclusion or consistency proof about ``log2 n``.

The proof functions here return *ranges* of leaves ``(start, end)`` whose subtree hashes make up
the proof; ``range_nodes`` turns a range into the stored nodes to read, ``fold`` hashes them.
So a caller collects every node a proof needs, reads them in one query, and never rebuilds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

Node = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [start, end)

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 MTH of one leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n >= 2): where RFC 9162 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees, left to right, whose fold is MTH(D[start:end]).

    Valid when ``start`` is a multiple of a power of two at least ``end - start``, which holds
    for every range the RFC's recursion produces (and for ``start == 0``).
    """
    nodes = []
    pos, size = start, end - start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            nodes.append((level, pos >> level))
            pos += 1 << level
    return nodes


def fold(hashes: list[bytes]) -> bytes:
    """Combine left-to-right complete-subtree hashes (largest first) into one subtree hash."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """RFC 9162 PATH(index, D[size]) as leaf ranges, leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index - lo < k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo += k
    path.reverse()
    return path


def consistency_ranges(old: int, new: int) -> list[Range]:
    """RFC 9162 PROOF(old, D[new]) as leaf ranges, in proof order."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old in (0, new):
        return []
    proof: list[Range] = []
    lo, hi, complete = 0, new, True
    m = old
    while m != hi - lo:
        k = split_point(hi - lo)
        if m <= k:
            proof.append((lo + k, hi))
            hi = lo + k
        else:
            proof.append((lo, lo + k))
            lo += k
            m -= k
            complete = False
    if not complete:
        proof.append((lo, hi))
    proof.reverse()
    return proof


def nodes_for(ranges: Iterable[Range]) -> set[Node]:
    """Every stored node needed to hash ``ranges``."""
    return {node for start, end in ranges for node in range_nodes(start, end)}


def hash_ranges(ranges: Iterable[Range], nodes: Mapping[Node, bytes]) -> list[bytes]:
    """The subtree hash of each range, from stored ``nodes``."""
    return [fold([nodes[n] for n in range_nodes(start, end)]) for start, end in ranges]


class Frontier:
    """The right edge of a growing tree: one hash per set bit of its size, largest first.

    Appending a leaf yields the stored nodes it completes; ``root()`` folds the edge. This is
    the whole state a writer (or a streaming verifier) needs.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: list[bytes] | None = None) -> None:
        self.size = size
        self.hashes = list(hashes or [])
        if len(self.hashes) != size.bit_count():
            raise ValueError("frontier does not match its tree size")

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the nodes ``(level, index, hash)`` it completes."""
        index = self.size
        completed = [(0, index, leaf)]
        acc = leaf
        level = 0
        while index >> level & 1:
            acc = node_hash(self.hashes.pop(), acc)
            level += 1
            completed.append((level, index >> level, acc))
        self.hashes.append(acc)
        self.size += 1
        return completed

    def root(self) -> bytes:
        return fold(self.hashes)

    def pack(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def unpack(cls, size: int, packed: bytes) -> Frontier:
        return cls(size, [packed[i : i + 32] for i in range(0, len(packed), 32)])
