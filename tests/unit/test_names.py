"""Peer pseudonyms: stable, well-formed, rarely colliding, reversible within a group."""

from __future__ import annotations

import functools
import random
import string
from collections import Counter

import pytest

from hivemind_exp.swarm.names import (
    NAME_SPACE,
    WORD_LISTS,
    is_generated_name,
    name_to_peer_candidates,
    normalize_name,
    peer_name,
    pseudonyms,
)

@functools.cache
def random_peer_ids(n: int, seed: int) -> list[str]:
    """Seeded random peer-ID strings (the name hash treats any string alike)."""
    rng = random.Random(seed)
    return ["Qm" + rng.randbytes(22).hex() for _ in range(n)]


@functools.cache
def big_sample() -> tuple[list[str], list[str]]:
    """20k peer ids and their names, shared by the statistical tests."""
    ids = random_peer_ids(20_000, seed=3)
    return ids, [peer_name(p) for p in ids]


def test_names_are_pinned() -> None:
    # These exact names are a public contract (dashboard, logs): changing the word lists or
    # the hash breaks it, which must be a deliberate, versioned change.
    assert peer_name("QmXyz") == "grateful-mahogany-donkey"
    assert peer_name("12D3KooWGzh9p1aUyBvZmcm2pDvkAhHzLnEmNqtgNNGyYknk6Bb8") == peer_name(
        "12D3KooWGzh9p1aUyBvZmcm2pDvkAhHzLnEmNqtgNNGyYknk6Bb8"
    )


def test_name_shape_and_word_lists() -> None:
    for words in WORD_LISTS:
        assert len(words) == len(set(words)) >= 140
        assert all(w.isascii() and w.isalpha() and w.islower() for w in words)
    assert NAME_SPACE > 5_000_000
    for pid in random_peer_ids(50, seed=1):
        name = peer_name(pid)
        assert name == normalize_name(name)
        assert is_generated_name(name)
        assert len(name.split("-")) == 3


def test_different_ids_different_names_and_all_words_used() -> None:
    ids = random_peer_ids(500, seed=7)
    names = [peer_name(p) for p in ids]
    assert len(set(names)) == 500
    # The hash spreads over the lists: most words of each list appear across 20k peers.
    many = [name.split("-") for name in big_sample()[1]]
    for i, words in enumerate(WORD_LISTS):
        assert len({m[i] for m in many}) > 0.95 * len(words)


def test_collision_rate_matches_name_space() -> None:
    names = big_sample()[1]
    n = len(names)
    counts = Counter(names)
    clashes = sum(c - 1 for c in counts.values())
    expected = n * (n - 1) / 2 / NAME_SPACE  # birthday estimate, ~20
    assert clashes < 2 * expected + 5


def test_pseudonyms_unique_even_with_a_clash() -> None:
    ids = random_peer_ids(30, seed=11)
    group = pseudonyms(ids + ids[:3])  # duplicate ids collapse
    assert len(group) == 30 and len(set(group.values())) == 30
    assert group == pseudonyms(reversed(ids))  # order of input does not matter


def test_pseudonyms_suffix_when_base_names_clash() -> None:
    # Find two ids sharing a name in the 20k sample above (there are ~20 such pairs).
    ids, names = big_sample()
    by_name: dict[str, list[str]] = {}
    for p, name in zip(ids, names, strict=True):
        by_name.setdefault(name, []).append(p)
    a, b = next(v for v in by_name.values() if len(v) >= 2)[:2]
    group = pseudonyms([a, b, ids[0]])
    first, second = sorted([a, b])
    assert group[first] == peer_name(a)
    assert group[second] == peer_name(a) + "-2"
    assert is_generated_name(group[second])
    assert name_to_peer_candidates(peer_name(a), [a, b, ids[0]]) == sorted([a, b])
    assert name_to_peer_candidates(peer_name(a) + "-2", [a, b, ids[0]]) == [second]


def test_reverse_lookup() -> None:
    ids = random_peer_ids(100, seed=5)
    target = ids[42]
    name = peer_name(target)
    assert name_to_peer_candidates(name, ids) == [target]
    assert name_to_peer_candidates(name.replace("-", " ").title(), ids) == [target]
    assert name_to_peer_candidates(f"[{name.upper()}]", ids) == [target]
    assert name_to_peer_candidates("not-a-peer", ids) == []
    assert name_to_peer_candidates("", ids) == []


def test_normalize_name() -> None:
    assert normalize_name("  Quick Amber_Otter! ") == "quick-amber-otter"
    assert normalize_name(None) == ""
    assert normalize_name(string.punctuation) == ""


def test_bad_peer_id_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="peer id"):
        peer_name("")
    with pytest.raises(ValueError, match="peer id"):
        peer_name(None)
