"""One stage numbering: the swarm counts from 1, the contract from 0; SAPO has one stage."""

from __future__ import annotations

import pytest

from hivemind_exp.game import stage


def test_three_stage_round_trips_through_the_chain_numbering() -> None:
    for s in (1, 2, 3):
        assert stage.from_chain("three-stage", stage.to_chain("three-stage", s)) == s
    assert [stage.stage_name("three-stage", s) for s in (0, 1, 2, 3, 4, None)] == \
        [None, "answer", "critique", "decide", None, None]


def test_sapo_has_one_stage_recorded_as_the_contracts_first() -> None:
    assert stage.stage_names("sapo") == ("rollouts",) and stage.stage_count("sapo") == 1
    assert {stage.from_chain("sapo", s0) for s0 in range(stage.CHAIN_STAGES)} == {1}
    assert stage.to_chain("sapo", 1) == 0


def test_unknown_game_names_the_choices() -> None:
    with pytest.raises(ValueError, match="three-stage, sapo"):
        stage.stage_count("chess")
