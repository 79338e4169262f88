"""Stages of a round, named and numbered in one place.

The swarm (DHT records, the coordinator, the node, logs, the dashboard API) numbers a
round's stages from 1: stage 1 is "answer" in the three-stage game and "rollouts" in SAPO.
The SwarmCoordinator contract counts from 0 and always has three stages (0.4.2's
``stageCount()`` is a constant), so a SAPO round steps the contract through all three.
``from_chain`` / ``to_chain`` are the only conversions between the two.
"""

from __future__ import annotations

from typing import Literal

Game = Literal["three-stage", "sapo"]
GAMES: tuple[Game, ...] = ("three-stage", "sapo")

_NAMES: dict[str, tuple[str, ...]] = {
    "three-stage": ("answer", "critique", "decide"),
    "sapo": ("rollouts",),
}
CHAIN_STAGES = 3  # the contract's stage count


def stage_names(game: str) -> tuple[str, ...]:
    try:
        return _NAMES[game]
    except KeyError:
        raise ValueError(f"unknown game {game!r}: expected one of {', '.join(GAMES)}") from None


def stage_count(game: str) -> int:
    return len(stage_names(game))


def stage_name(game: str, stage: int | None) -> str | None:
    """The name of swarm stage ``stage`` (1-based); None when unknown or out of range."""
    names = stage_names(game)
    if stage is None or not 1 <= stage <= len(names):
        return None
    return names[stage - 1]


def from_chain(game: str, chain_stage: int) -> int:
    """The swarm stage (1-based) for the contract's 0-based stage."""
    if game == "sapo":
        return 1  # one swarm stage spans the contract's three
    stage_names(game)
    return chain_stage + 1


def to_chain(game: str, stage: int) -> int:
    """The contract's 0-based stage that a swarm stage's rewards are recorded under."""
    if game == "sapo":
        return 0
    stage_names(game)
    return stage - 1
