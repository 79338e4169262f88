"""The on-chain reward scale: points x 1000, rounded half away from zero."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hivemind_exp.chain.rewards import REWARD_SCALE, chain_to_points, points_to_chain


@pytest.mark.parametrize("points,expected", [(0, 0), (1, 1000), (1.2345, 1235), (-1.2345, -1235), (0.0004, 0),
                                             (1.0005, 1001), (-2.5, -2500), (123456.789, 123456789)])
def test_points_to_chain(points: float, expected: int) -> None:
    assert points_to_chain(points) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_points_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        points_to_chain(bad)


def test_too_large_for_int256() -> None:
    with pytest.raises(ValueError, match="int256"):
        points_to_chain(1e80)


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_round_trip_of_stored_values(value: int) -> None:
    assert points_to_chain(chain_to_points(value)) == value


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_error_at_most_half_a_unit(points: float) -> None:
    assert abs(chain_to_points(points_to_chain(points)) - points) <= 0.5 / REWARD_SCALE + 1e-9
