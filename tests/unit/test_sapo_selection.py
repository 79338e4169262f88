"""External-group selection policies on hand-built groups."""

import random

import pytest

from hivemind_exp.sapo.selection import ScoredGroup, select_groups, usable


def g(peer: str, key: str, rewards: list[float]) -> ScoredGroup:
    return ScoredGroup(peer=peer, key=key, problem=None, completions=["x"] * len(rewards), rewards=rewards)


GROUPS = [
    g("a", "flat-high", [1.0, 1.0, 1.0, 1.0]),   # mean 1, no signal
    g("b", "flat-zero", [0.0, 0.0, 0.0, 0.0]),   # mean 0, no signal
    g("c", "mixed-small", [0.0, 0.0, 0.0, 1.0]),  # var 0.1875
    g("d", "mixed-half", [0.0, 1.0, 0.0, 1.0]),   # var 0.25
    g("e", "mostly", [1.0, 1.0, 1.0, 0.5]),       # mean 0.875, small var
]


def keys(groups):
    return [x.key for x in groups]


def test_signal_takes_variance_first_most_first():
    got = select_groups(GROUPS, 2, "signal", random.Random(0))
    assert keys(got) == ["mixed-half", "mixed-small"]


def test_signal_fills_up_with_flat_groups_only_after_every_informative_one():
    got = select_groups(GROUPS, 4, "signal", random.Random(0))
    assert set(keys(got[:3])) == {"mixed-half", "mixed-small", "mostly"}
    assert keys(got)[3] in {"flat-high", "flat-zero"}


def test_best_takes_highest_mean():
    got = select_groups(GROUPS, 2, "best", random.Random(0))
    assert keys(got) == ["flat-high", "mostly"]


def test_random_is_a_seeded_sample_without_repeats():
    a = select_groups(GROUPS, 3, "random", random.Random(7))
    b = select_groups(GROUPS, 3, "random", random.Random(7))
    assert keys(a) == keys(b) and len(set(keys(a))) == 3
    samples = {tuple(keys(select_groups(GROUPS, 3, "random", random.Random(s)))) for s in range(20)}
    assert len(samples) > 5  # not a fixed choice


def test_ties_do_not_follow_arrival_order():
    tied = [g(p, p, [0.0, 1.0]) for p in "abcdefgh"]
    firsts = {select_groups(tied, 1, "signal", random.Random(s))[0].key for s in range(30)}
    assert len(firsts) > 3


@pytest.mark.parametrize("policy", ["signal", "random", "best"])
def test_count_zero_or_no_groups_gives_nothing(policy):
    assert select_groups(GROUPS, 0, policy, random.Random(0)) == []
    assert select_groups([], 3, policy, random.Random(0)) == []


def test_more_wanted_than_available_gives_all():
    assert len(select_groups(GROUPS, 50, "best", random.Random(0))) == len(GROUPS)


def test_unknown_policy_names_the_choices():
    with pytest.raises(ValueError, match="signal, random, best"):
        select_groups(GROUPS, 1, "greedy", random.Random(0))


def test_usable_counts_only_groups_with_signal_for_the_signal_policy():
    assert [usable(x, "signal") for x in GROUPS] == [False, False, True, True, True]
    assert all(usable(x, "random") for x in GROUPS)
