"""RFC 6962 Merkle trees (``audit._merkle``): the public test vectors, a naive oracle, mutated proofs."""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import (
    EMPTY_ROOT,
    BadProof,
    Chain,
    Frontier,
    TreeStore,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).parent / "data" / "rfc6962"  # see its README.md: origin and license

#: The eight leaves RFC 6962 implementations test with (certificate-transparency's reference data);
#: the vectors' happy paths are proofs in trees of these leaves.
RFC_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]


# -- a naive oracle, straight from RFC 6962 section 2.1 ------------------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """MTH over leaf hashes, by the RFC's recursive definition."""
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    return path(m, d[:k]) + [mth(d[k:])] if m < k else path(m - k, d[k:]) + [mth(d[:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    def sub(m: int, d: list[bytes], b: bool) -> list[bytes]:
        if m == len(d):
            return [] if b else [mth(d)]
        k = _k(len(d))
        return sub(m, d[:k], b) + [mth(d[k:])] if m <= k else sub(m - k, d[k:], False) + [mth(d[:k])]
    return sub(m, d, True)


def hashes(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


# -- hashing -----------------------------------------------------------------------------------


def test_leaf_and_node_hashes_are_domain_separated_sha256():
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_the_reference_leaves_give_the_vectors_leaf_hashes_and_root():
    happy = json.loads((VECTORS / "inclusion" / "1" / "happy-path.json").read_text())
    store = TreeStore(leaf_hash(d) for d in RFC_LEAVES)
    assert leaf_hash(RFC_LEAVES[0]) == base64.b64decode(happy["leafHash"])
    assert store.root() == root_of([leaf_hash(d) for d in RFC_LEAVES]) == base64.b64decode(happy["root"])
    assert store.root().hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


# -- the public vectors: verification, and generation of the happy paths ------------------------


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _probes(kind: str) -> list[Path]:
    found = sorted((VECTORS / kind).rglob("*.json"))
    assert len(found) > 50, f"the {kind} vectors are missing"
    return found


def _inclusion(path_: Path) -> tuple[dict, str | None]:
    v = json.loads(path_.read_text())
    try:
        verify_inclusion(v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), [_b64(p) for p in v["proof"] or []],
                         _b64(v["root"]))
    except BadProof as exc:
        return v, exc.check
    return v, None


def _consistency(path_: Path) -> tuple[dict, str | None]:
    v = json.loads(path_.read_text())
    try:
        verify_consistency(v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]),
                           [_b64(p) for p in v["proof"] or []])
    except BadProof as exc:
        return v, exc.check
    return v, None


@pytest.mark.parametrize("probe", _probes("inclusion"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_inclusion_vectors(probe):
    v, refused = _inclusion(probe)
    assert (refused is not None) == v["wantErr"], (v["desc"], refused)


@pytest.mark.parametrize("probe", _probes("consistency"), ids=lambda p: str(p.relative_to(VECTORS)))
def test_consistency_vectors(probe):
    v, refused = _consistency(probe)
    assert (refused is not None) == v["wantErr"], (v["desc"], refused)


def test_every_check_of_the_verifiers_refuses_some_vector():
    inclusion = Counter(_inclusion(p)[1] for p in _probes("inclusion"))
    consistency = Counter(_consistency(p)[1] for p in _probes("consistency"))
    assert set(inclusion) == {None, "range", "hash_size", "length", "root"}, inclusion
    assert set(consistency) == {None, "range", "hash_size", "length", "root1", "root2"}, consistency


@pytest.mark.parametrize("probe", sorted(VECTORS.glob("inclusion/[0-9]/happy-path.json")), ids=lambda p: p.parent.name)
def test_the_store_generates_the_vectors_inclusion_proofs(probe):
    v = json.loads(probe.read_text())
    if v["treeSize"] > len(RFC_LEAVES) or _b64(v["leafHash"]) != leaf_hash(RFC_LEAVES[v["leafIdx"]]):
        pytest.skip("not a proof over the reference leaves")
    store = TreeStore(leaf_hash(d) for d in RFC_LEAVES)
    assert store.inclusion_proof(v["leafIdx"], v["treeSize"]) == [_b64(p) for p in v["proof"] or []]
    assert store.root(v["treeSize"]) == _b64(v["root"])


@pytest.mark.parametrize("probe", sorted(VECTORS.glob("consistency/[0-9]/happy-path.json")), ids=lambda p: p.parent.name)
def test_the_store_generates_the_vectors_consistency_proofs(probe):
    v = json.loads(probe.read_text())
    store = TreeStore(leaf_hash(d) for d in RFC_LEAVES)
    assert store.root(v["size1"]) == _b64(v["root1"]) and store.root(v["size2"]) == _b64(v["root2"])
    assert store.consistency_proof(v["size1"], v["size2"]) == [_b64(p) for p in v["proof"] or []]


# -- the oracle: roots and proofs at every size --------------------------------------------------


@settings(max_examples=40, deadline=None, database=None)
@given(st.lists(st.binary(max_size=8), max_size=70))
def test_the_frontier_and_the_store_agree_with_the_recursive_definition_at_every_size(leaves):
    d = [leaf_hash(x) for x in leaves]
    frontier, store = Frontier(), TreeStore()
    assert frontier.root() == store.root() == mth([]) == EMPTY_ROOT
    for n, h in enumerate(d, 1):
        frontier.append(h)
        store.append(h)
        assert frontier.root() == mth(d[:n])
        assert len(frontier.nodes) == n.bit_count()
    for n in range(len(d) + 1):
        assert store.root(n) == mth(d[:n])


@settings(max_examples=30, deadline=None, database=None)
@given(st.integers(min_value=1, max_value=150), st.data())
def test_generated_proofs_are_the_rfcs_and_verify(size, data):
    d = hashes(size)
    store = TreeStore(d)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    m = data.draw(st.integers(min_value=1, max_value=size))
    assert store.inclusion_proof(index) == path(index, d)
    verify_inclusion(index, size, d[index], store.inclusion_proof(index), store.root())
    assert store.consistency_proof(m) == proof(m, d)
    verify_consistency(m, size, store.root(m), store.root(), store.consistency_proof(m))


def test_every_proof_in_every_tree_up_to_64_leaves_is_the_rfcs():
    d = hashes(64)
    store = TreeStore(d)
    for n in range(1, 65):
        for i in range(n):
            assert store.inclusion_proof(i, n) == path(i, d[:n])
        for m in range(1, n + 1):
            assert store.consistency_proof(m, n) == proof(m, d[:n])


def test_a_frontier_resumes_from_its_size_and_nodes():
    d = hashes(37)
    first = Frontier()
    for h in d[:21]:
        first.append(h)
    resumed = Frontier(first.size, first.nodes)
    for h in d[21:]:
        resumed.append(h)
    assert resumed.root() == mth(d)
    with pytest.raises(ValueError):
        Frontier(21, first.nodes[:-1])


# -- mutated proofs: every one refused, and by the check that should ------------------------------


def _flips(nodes: list[bytes]) -> Iterator[list[bytes]]:
    for i, node in enumerate(nodes):
        for bit in (0, 7, 8 * 31 + 5):  # first, a middle and the last byte
            flipped = bytearray(node)
            flipped[bit // 8] ^= 1 << (bit % 8)
            yield nodes[:i] + [bytes(flipped)] + nodes[i + 1:]


def _inclusion_mutations(index: int, size: int, leaf: bytes, nodes: list[bytes], root: bytes):
    for p in _flips(nodes):
        yield "flip", (index, size, leaf, p, root)
    for i in range(len(nodes)):
        yield "drop", (index, size, leaf, nodes[:i] + nodes[i + 1:], root)
    for i in range(len(nodes) + 1):
        yield "add", (index, size, leaf, nodes[:i] + [leaf_hash(b"extra")] + nodes[i:], root)
    for i in range(len(nodes) - 1):
        yield "swap", (index, size, leaf, nodes[:i] + [nodes[i + 1], nodes[i]] + nodes[i + 2:], root)
    for other in {index - 1, index + 1, index ^ 1, index * 2 + 1} - {index}:
        yield "index", (other, size, leaf, nodes, root)
    for other in {size - 1, size + 1, size * 2} - {size}:
        yield "size", (index, other, leaf, nodes, root)
    yield "leaf", (index, size, leaf_hash(b"not the leaf"), nodes, root)
    yield "root", (index, size, leaf, nodes, leaf_hash(b"not the root"))
    yield "short", (index, size, leaf, nodes[:-1] + [nodes[-1][:31]] if nodes else nodes, root)


def sides(index: int, size: int) -> list[str]:
    """Which side each node of PATH(index, D[0:size]) hashes on: the shape the proof is read with."""
    if size == 1:
        return []
    k = _k(size)
    return sides(index, k) + ["R"] if index < k else sides(index - k, size - k) + ["L"]


def test_every_mutated_inclusion_proof_is_refused_and_by_which_check():
    d = hashes(45)
    store = TreeStore(d)
    refused: dict[str, Counter] = {}
    same_shape = total = 0
    for size in (2, 3, 7, 8, 13, 32, 45):
        for index in range(size):
            nodes, root = store.inclusion_proof(index, size), store.root(size)
            verify_inclusion(index, size, d[index], nodes, root)  # the original verifies
            for kind, args in _inclusion_mutations(index, size, d[index], nodes, root):
                if kind == "short" and not nodes:
                    continue
                total += 1
                if kind == "size" and args[1] > index and sides(index, args[1]) == sides(index, size):
                    # The root binds the leaves, not the size: a size that reads the proof the same way
                    # (leaf 0 of 7 and of 8) verifies alike.  Checkpoints sign size and root together.
                    verify_inclusion(*args)
                    same_shape += 1
                    continue
                with pytest.raises(BadProof) as info:
                    verify_inclusion(*args)
                refused.setdefault(kind, Counter())[info.value.check] += 1
    assert total > 3000 and 0 < same_shape < sum(refused["size"].values())
    assert set(refused["flip"]) == {"root"}
    assert set(refused["drop"]) == set(refused["add"]) == {"length"}
    assert set(refused["swap"]) == {"root"}
    assert set(refused["leaf"]) == set(refused["root"]) == {"root"}
    assert set(refused["short"]) == {"hash_size"}
    assert set(refused["index"]) == {"range", "length", "root"}, refused["index"]
    # A proof's length fixes its shape (the sides are the index's bits, then left siblings), so a size
    # that changes the shape changes the length too: "root" is never the check that refuses a size.
    assert set(refused["size"]) == {"range", "length"}, refused["size"]


def _consistency_mutations(m: int, n: int, r1: bytes, r2: bytes, nodes: list[bytes]):
    for p in _flips(nodes):
        yield "flip", (m, n, r1, r2, p)
    for i in range(len(nodes)):
        yield "drop", (m, n, r1, r2, nodes[:i] + nodes[i + 1:])
    for i in range(len(nodes) + 1):
        yield "add", (m, n, r1, r2, nodes[:i] + [leaf_hash(b"extra")] + nodes[i:])
    for i in range(len(nodes) - 1):
        yield "swap", (m, n, r1, r2, nodes[:i] + [nodes[i + 1], nodes[i]] + nodes[i + 2:])
    for other in {m - 1, m + 1} - {m, n}:
        yield "size1", (other, n, r1, r2, nodes)
    for other in {n - 1, n + 1, 2 * n} - {m, n}:
        yield "size2", (m, other, r1, r2, nodes)
    yield "root1" if m & (m - 1) else "root1 of a perfect tree", (m, n, leaf_hash(b"x"), r2, nodes)
    yield "root2", (m, n, r1, leaf_hash(b"x"), nodes)
    yield "swapped", (n, m, r2, r1, nodes)


def consistency_sides(m: int, n: int) -> list[str]:
    """How each node of PROOF(m, D[0:n]) is used: the old subtree itself, a left or a right sibling."""
    def sub(m: int, n: int, b: bool) -> list[str]:
        if m == n:
            return [] if b else ["seed"]
        k = _k(n)
        return sub(m, k, b) + ["R"] if m <= k else sub(m - k, n - k, False) + ["L"]
    return sub(m, n, True)


def test_every_mutated_consistency_proof_is_refused_and_by_which_check():
    d = hashes(40)
    store = TreeStore(d)
    refused: dict[str, Counter] = {}
    same_shape = 0
    for n in (2, 3, 5, 8, 13, 16, 40):
        for m in range(1, n):
            nodes = store.consistency_proof(m, n)
            r1, r2 = store.root(m), store.root(n)
            verify_consistency(m, n, r1, r2, nodes)
            for kind, args in _consistency_mutations(m, n, r1, r2, nodes):
                if kind == "size2" and args[1] > m and consistency_sides(m, args[1]) == consistency_sides(m, n):
                    verify_consistency(*args)  # as for inclusion: root2 binds the leaves, not the size
                    same_shape += 1
                    continue
                with pytest.raises(BadProof) as info:
                    verify_consistency(*args)
                refused.setdefault(kind, Counter())[info.value.check] += 1
    assert 0 < same_shape < sum(refused["size2"].values())
    assert set(refused["size2"]) == {"length"}, refused["size2"]  # m < n - 1 < n: never out of range
    # A flipped node is one the old root is rebuilt from, or only the new one.
    assert set(refused["flip"]) == {"root1", "root2"}, refused["flip"]
    assert set(refused["drop"]) == set(refused["add"]) == {"length"}
    assert set(refused["swap"]) <= {"root1", "root2"} and refused["swap"]
    assert set(refused["root1"]) == {"root1"}
    # A perfect old tree is itself a node of the new one: its root seeds the proof, so a wrong one
    # shows in the new root.
    assert set(refused["root1 of a perfect tree"]) == {"root2"}
    assert set(refused["root2"]) == {"root2"}
    assert set(refused["swapped"]) == {"range"}
    assert set(refused["size1"]) <= {"range", "length", "root1", "root2"} and refused["size1"]["length"]


def test_equal_sizes_need_an_empty_proof_and_equal_roots_and_size_zero_proves_nothing():
    r = root_of(hashes(3))
    verify_consistency(3, 3, r, r, [])
    for args, check in [((3, 3, r, r, [r]), "length"), ((3, 3, r, EMPTY_ROOT, []), "root2"),
                        ((0, 3, EMPTY_ROOT, r, []), "range"), ((0, 0, EMPTY_ROOT, EMPTY_ROOT, []), "range"),
                        ((4, 3, r, r, []), "range")]:
        with pytest.raises(BadProof) as info:
            verify_consistency(*args)
        assert info.value.check == check, args


def test_the_store_refuses_ranges_it_does_not_hold():
    store = TreeStore(hashes(5))
    for call in (lambda: store.inclusion_proof(5), lambda: store.inclusion_proof(0, 6),
                 lambda: store.consistency_proof(0), lambda: store.consistency_proof(3, 6),
                 lambda: store.root(6), lambda: store.subtree(4, 8), lambda: store.append(b"short")):
        with pytest.raises(ValueError):
            call()


# -- a log of 100,000 records: every inclusion and consistency proof verifies -----------------------


def test_every_record_of_a_100k_log_has_verifying_inclusion_and_consistency_proofs():
    n = 100_000
    chain = Chain()
    leaves = [leaf_hash(chain.append("test.event", {"n": i}, 1_700_000_000.0 + i)) for i in range(n)]
    store = TreeStore(leaves)
    root = store.root()
    assert root == chain.root()
    for i in range(n):
        verify_inclusion(i, n, leaves[i], store.inclusion_proof(i), root)
    # Every earlier tree head the log could have signed (each size m, its root computed apart from
    # the store) is consistent with the last.
    frontier = Frontier()
    for m in range(1, n + 1):
        frontier.append(leaves[m - 1])
        verify_consistency(m, n, frontier.root(), root, store.consistency_proof(m))
    # The loops are not vacuous: at this size a proof still refuses the wrong leaf or the wrong old head.
    with pytest.raises(BadProof):
        verify_inclusion(7, n, leaves[8], store.inclusion_proof(7), root)
    with pytest.raises(BadProof):
        verify_consistency(n - 1, n, store.root(n - 2), root, store.consistency_proof(n - 1))
