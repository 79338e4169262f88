"""Reward scale: the contract stores int256, the game scores in float points.

On chain, reward = round(points x 1000) (three decimals kept, half away from zero), so
1.2345 points is stored as 1235 and reads back as 1.235. Totals are sums of the stored
integers, so they add up exactly.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Context, Decimal

REWARD_SCALE = 1000
INT256_MIN = -(2**255)
INT256_MAX = 2**255 - 1


def points_to_chain(points: float) -> int:
    """Float points -> the int256 the contract stores (points x 1000, rounded half away from zero)."""
    if not math.isfinite(points):
        raise ValueError(f"reward must be a finite number of points, got {points!r}")
    # Decimal(str(x)) rounds what the user sees (1.0005 -> 1001), not its binary neighbour.
    # Precision above int256's 78 digits, so huge values fail the range check, not the arithmetic.
    ctx = Context(prec=100, rounding=ROUND_HALF_UP)
    value = int(ctx.multiply(Decimal(str(points)), Decimal(REWARD_SCALE)).quantize(Decimal(1), context=ctx))
    if not INT256_MIN <= value <= INT256_MAX:
        raise ValueError(f"reward {points!r} points does not fit in int256 after x{REWARD_SCALE}")
    return value


def chain_to_points(value: int) -> float:
    """The contract's int256 -> float points."""
    return int(value) / REWARD_SCALE
