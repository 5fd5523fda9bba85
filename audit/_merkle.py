"""RFC 6962 Merkle trees: hashing, tree heads, inclusion and consistency proofs.

Hashing (RFC 6962 section 2.1, SHA-256 throughout)::

    leaf_hash(d)    = SHA-256(0x00 || d)
    node_hash(l, r) = SHA-256(0x01 || l || r)
    MTH([])         = SHA-256("")                       (EMPTY_ROOT)
    MTH([d])        = leaf_hash(d)
    MTH(D[0:n])     = node_hash(MTH(D[0:k]), MTH(D[k:n])),  k the largest power of two < n

Seen level by level, the tree is the aligned binary tree: the node at
``(level, j)`` covers leaves ``[j * 2**level, (j + 1) * 2**level)`` cut at the
tree size.  A node that is cut to nothing does not exist; a node cut so that
only its left child remains *is* that child (RFC 6962 never hashes a lone
child).  Every left child is a perfect subtree; only the nodes on the right
border (the ancestors of the last leaf) may be cut ("ragged").

Three tools, for three jobs:

- :class:`Frontier` (a compact range ``[0, size)``) appends a leaf in O(1)
  amortised hashes and keeps O(log n) hashes: the roots of the perfect
  subtrees that make up ``size`` in binary, largest first.  It gives the root
  at its current size.  This is what a log writer keeps.
- :class:`TreeStore` keeps every perfect subtree's hash (about ``2 n``
  hashes), so the hash of any node, the root at any past size, and any
  inclusion or consistency proof cost O(log n) look-ups and at most O(log n)
  hashes for the ragged nodes (cached: a node ``[start, end)`` of an
  append-only tree never changes).  This is what a prover keeps.
- :func:`verify_inclusion` and :func:`verify_consistency` are small pure
  functions of their arguments, for verifiers who keep nothing.

Invariants:

- Proofs are lists of 32-byte hashes ordered bottom-up (the sibling nearest
  the leaf first), exactly as RFC 6962's PATH and PROOF produce them.
- Verification raises :class:`~audit.BadProof` on any deviation and names the
  check that refused (``"range"``, ``"hash_size"``, ``"length"``,
  ``"root"``, ``"root1"``, ``"root2"``); it never returns a false success.
  The proof's length is fixed by ``(index, size)`` or ``(size1, size2)``, so a
  node dropped or added fails ``"length"`` before any hashing.
- A consistency proof from size 0 is refused (``"range"``): it would prove
  nothing (every tree extends the empty one; callers check that case without
  a proof).  This follows the public test vectors.
- A root commits to the leaves, not to the tree size: a proof read with
  another size that gives it the same shape (leaf 0 of 7 leaves and of 8:
  three right siblings either way) leads to the same root; a size that
  changes the shape is refused (for inclusion proofs it always changes the
  length too).  So a verifier takes size and root together from one signed
  checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .exceptions import BadProof

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "TreeStore",
    "leaf_hash",
    "node_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: The root of the empty tree: SHA-256 of nothing.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """The tree head of these leaf hashes (a bottom-up reduction; a :class:`Frontier` without appending)."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


class Frontier:
    """An append-only tree that keeps only its compact range ``[0, size)``: O(log n) hashes.

    Invariant: ``nodes`` are the roots of the perfect subtrees whose sizes are
    the set bits of ``size``, largest (leftmost) first; so ``len(nodes) ==
    size.bit_count()`` and the root is their right-to-left fold.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self, size: int = 0, nodes: Iterable[bytes] = ()) -> None:
        nodes = list(nodes)
        if size < 0 or len(nodes) != size.bit_count() or any(len(n) != HASH_SIZE for n in nodes):
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} nodes of {HASH_SIZE} bytes")
        self._size = size
        self._nodes = nodes

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        """The compact range's hashes, largest subtree first: with ``size``, all there is to resume from."""
        return tuple(self._nodes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash: each trailing 1 bit of ``size`` merges two equal subtrees into one."""
        nodes, size, h = self._nodes, self._size, leaf
        while size & 1:
            h = _sha256(_NODE + nodes.pop() + h).digest()
            size >>= 1
        nodes.append(h)
        self._size += 1

    def root(self) -> bytes:
        """The tree head at the current size (``EMPTY_ROOT`` when empty)."""
        nodes = self._nodes
        if not nodes:
            return EMPTY_ROOT
        h = nodes[-1]
        for left in reversed(nodes[:-1]):
            h = _sha256(_NODE + left + h).digest()
        return h


class TreeStore:
    """Every perfect subtree's hash of an append-only tree: roots and proofs at any size.

    ``levels[l][j]`` is the hash of the perfect subtree ``[j << l, (j + 1) << l)``;
    it is written once, when the subtree's last leaf arrives (one ``node_hash``
    per append, amortised).  Memory: about two hash objects per leaf.
    """

    __slots__ = ("_levels", "_ragged")

    #: How many ragged-node hashes to keep before the cache is emptied (each is valid forever).
    RAGGED_CACHE = 1 << 16

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        self._ragged: dict[tuple[int, int], bytes] = {}
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf)}")
        levels = self._levels
        levels[0].append(leaf)
        j, level, h = len(levels[0]) - 1, 0, leaf
        while j & 1:  # a right child completed its parent
            h = _sha256(_NODE + levels[level][j - 1] + h).digest()
            level += 1
            if level == len(levels):
                levels.append([])
            levels[level].append(h)
            j >>= 1

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a node of the tree: a perfect subtree, or a ragged one on the border."""
        if not 0 <= start < end <= len(self._levels[0]):
            raise ValueError(f"[{start}, {end}) is not a range of leaves of a tree of size {self.size}")
        n = end - start
        if n & (n - 1) == 0 and start & (n - 1) == 0:  # perfect and aligned: stored
            level = n.bit_length() - 1
            return self._levels[level][start >> level]
        key = (start, end)
        h = self._ragged.get(key)
        if h is None:
            k = _split(n)
            h = _sha256(_NODE + self.subtree(start, start + k) + self.subtree(start + k, end)).digest()
            if len(self._ragged) >= self.RAGGED_CACHE:
                self._ragged.clear()
            self._ragged[key] = h
        return h

    def root(self, size: int | None = None) -> bytes:
        """The tree head at ``size`` (default: now); any size up to the current one."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"no tree of size {size}: the store holds {self.size} leaves")
        return self.subtree(0, size) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size]): the siblings on the way from leaf ``index`` to the root."""
        size = self.size if size is None else size
        if not 0 <= index < size <= self.size:
            raise ValueError(f"leaf {index} is not in a tree of size {size} (the store holds {self.size})")
        levels = self._levels
        # Below the level where the paths to ``index`` and ``size - 1`` part, every
        # sibling is perfect but the last (the right child at the fork, maybe ragged).
        inner = (index ^ (size - 1)).bit_length()
        proof = [levels[level][(index >> level) ^ 1] for level in range(inner - 1)]
        if inner:
            level = inner - 1
            start = ((index >> level) ^ 1) << level
            proof.append(self.subtree(start, min(start + (1 << level), size)))
        # Above it the path runs along the right border: only left siblings, all perfect.
        level, rest = inner, index >> inner
        while rest:
            if rest & 1:
                proof.append(levels[level][(index >> level) ^ 1])
            rest >>= 1
            level += 1
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """RFC 6962 PROOF(size1, D[0:size2]) for ``0 < size1 <= size2``; empty when the sizes are equal."""
        size2 = self.size if size2 is None else size2
        if not 0 < size1 <= size2 <= self.size:
            raise ValueError(f"no consistency proof from {size1} to {size2} (the store holds {self.size})")
        # SUBPROOF(m, D[start:end], b), unrolled: each step keeps the half that holds
        # the old tree's last leaf and records the other half, outermost first.
        levels, outer = self._levels, []
        start, end, m, whole = 0, size2, size1, True
        while m != end - start:
            level = (end - start - 1).bit_length() - 1
            k = 1 << level  # the split: [start, start + k) is perfect, [start + k, end) perfect or ragged
            if m <= k:
                right = start + k
                outer.append(levels[level][right >> level] if end - right == k else self.subtree(right, end))
                end = right
            else:
                outer.append(levels[level][start >> level])
                start, m, whole = start + k, m - k, False
        if not whole:  # the old tree's last node is not the old root itself: the verifier needs it
            outer.append(self.subtree(start, end))
        outer.reverse()
        return outer


def _bad(check: str, message: str, **details: object) -> BadProof:
    return BadProof(message, check=check, **details)


def _check_hashes(proof: Sequence[bytes]) -> None:
    if not set(map(len, proof)) <= {HASH_SIZE}:
        i = next(i for i, h in enumerate(proof) if len(h) != HASH_SIZE)
        raise _bad("hash_size", f"proof node {i} is {len(proof[i])} bytes, not {HASH_SIZE}")


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` is the hash at ``index`` of the tree of ``size`` whose head is ``root``.

    Raises :class:`~audit.BadProof` (``check``: ``"range"`` when ``index`` is
    not below ``size``, ``"hash_size"``, ``"length"`` when the proof has not
    exactly the nodes ``(index, size)`` call for, ``"root"`` when it leads to
    another root).  ``size`` and ``root`` belong together: take both from one
    signed checkpoint.
    """
    if not 0 <= index < size:
        raise _bad("range", f"leaf {index} is not in a tree of size {size}", index=index, size=size)
    if len(leaf) != HASH_SIZE:
        raise _bad("hash_size", f"the leaf hash is {len(leaf)} bytes, not {HASH_SIZE}")
    _check_hashes(proof)
    inner = (index ^ (size - 1)).bit_length()
    want = inner + (index >> inner).bit_count()
    if len(proof) != want:
        raise _bad("length", f"an inclusion proof of leaf {index} in {size} has {want} nodes, not {len(proof)}",
                   index=index, size=size)
    h, bits, sha256, node = leaf, index, _sha256, _NODE
    for i, sibling in enumerate(proof):
        if i >= inner or bits & 1:  # a left sibling (on the right border, all of them are)
            h = sha256(node + sibling + h).digest()
        else:
            h = sha256(node + h + sibling).digest()
        bits >>= 1
    if h != root:
        raise _bad("root", f"the proof of leaf {index} leads to another root than the tree of size {size}'s",
                   index=index, size=size)


def _consistency_length(size1: int, size2: int) -> int:
    """How many nodes PROOF(size1, D[0:size2]) has (``0 < size1 < size2``)."""
    shift = (size1 & -size1).bit_length() - 1  # the old tree's last perfect subtree is 2**shift leaves
    last, end = (size1 - 1) >> shift, (size2 - 1) >> shift
    inner = (last ^ end).bit_length()
    return (last != 0) + inner + (last >> inner).bit_count()


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of ``size2`` with head ``root2`` extends the tree of ``size1`` with head ``root1``.

    Requires ``0 < size1 <= size2``; equal sizes need an empty proof and equal
    roots.  Raises :class:`~audit.BadProof` (``check``: ``"range"``,
    ``"hash_size"``, ``"length"``, ``"root1"`` when the proof does not
    rebuild the old head, ``"root2"`` when it does not rebuild the new one).
    """
    if not 0 < size1 <= size2:
        raise _bad("range", f"no consistency proof from size {size1} to size {size2}", size1=size1, size2=size2)
    _check_hashes(proof)  # a root of another length fails "root1"/"root2": it equals no hash
    if size1 == size2:  # nothing to prove: the heads are the same or the log forked
        if proof:
            raise _bad("length", f"trees of one size ({size1}) need an empty proof, not {len(proof)} nodes")
        if root1 != root2:
            raise _bad("root2", f"two trees of size {size1} have different roots")
        return
    want = _consistency_length(size1, size2)
    if len(proof) != want:
        raise _bad("length", f"a consistency proof from {size1} to {size2} has {want} nodes, not {len(proof)}",
                   size1=size1, size2=size2)
    # Walk up from the old tree's last perfect subtree (level ``shift``), whose
    # hash is root1 itself when size1 is a power of two, else the proof's first
    # node.  h1 rebuilds the old head (left siblings only), h2 the new one.
    shift = (size1 & -size1).bit_length() - 1
    last, end = (size1 - 1) >> shift, (size2 - 1) >> shift
    nodes = iter(proof)
    h1 = h2 = next(nodes) if last else root1
    sha256, node = _sha256, _NODE
    for sibling in nodes:
        if end == 0:  # cannot happen after the length check; kept as the loop's own guard
            raise _bad("length", "the proof runs past the new tree's root")
        if last & 1 or last == end:  # a left sibling: in both trees
            h1 = sha256(node + sibling + h1).digest()
            h2 = sha256(node + sibling + h2).digest()
            if not last & 1:  # the rest of the old path is the right border: climb to its next left turn
                while last and not last & 1:
                    last >>= 1
                    end >>= 1
        else:  # a right sibling: only in the new tree
            h2 = sha256(node + h2 + sibling).digest()
        last >>= 1
        end >>= 1
    if h1 != root1:
        raise _bad("root1", f"the proof does not rebuild the tree of size {size1}'s root", size1=size1, size2=size2)
    if h2 != root2:
        raise _bad("root2", f"the proof does not rebuild the tree of size {size2}'s root", size1=size1, size2=size2)
