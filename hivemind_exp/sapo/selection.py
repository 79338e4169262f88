"""Which external groups a SAPO node trains on.

A group's rewards are the receiver's own re-scoring. With beta = 0 a group whose
completions all scored the same has zero advantage and contributes no gradient, so the
default policy, ``signal``, takes groups with reward variance first (most variance first)
and fills up with the rest; ``random`` takes a uniform sample; ``best`` the highest mean
reward (the paper's "external best"). Every policy is deterministic given its rng.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

POLICIES = ("signal", "random", "best")


@dataclass(frozen=True)
class ScoredGroup:
    peer: str  # who published it
    key: str  # its group key (the spec in text form)
    problem: Any  # the receiver's regenerated `TaskProblem`
    completions: list[str]
    rewards: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.rewards) / len(self.rewards) if self.rewards else 0.0

    @property
    def variance(self) -> float:
        return statistics.pvariance(self.rewards) if len(self.rewards) > 1 else 0.0

    @property
    def has_signal(self) -> bool:
        return self.variance > 0.0


def select_groups(groups: Sequence[ScoredGroup], count: int, policy: str, rng: random.Random) -> list[ScoredGroup]:
    """Up to `count` groups by `policy`; ties are broken by the rng, never by arrival order."""
    if policy not in POLICIES:
        raise ValueError(f"unknown external-group policy {policy!r}; use one of {', '.join(POLICIES)}")
    if count <= 0 or not groups:
        return []
    pool = list(groups)
    rng.shuffle(pool)  # the tie-break: sorts below are stable
    if policy == "random":
        return pool[:count]
    if policy == "best":
        return sorted(pool, key=lambda g: g.mean, reverse=True)[:count]
    return sorted(pool, key=lambda g: (g.has_signal, g.variance), reverse=True)[:count]


def usable(group: ScoredGroup, policy: str) -> bool:
    """Whether a candidate counts towards "enough arrived, stop waiting" for this policy."""
    return group.has_signal if policy == "signal" else True
