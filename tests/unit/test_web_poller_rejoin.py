"""The dashboard's DHT poller through an outage of its swarm reader: it rejoins every
REJOIN_AFTER failures (not on every poll), warns once per outage, and warns again for the next one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from api import poller as poller_mod
from api.poller import REJOIN_AFTER, Poller
from api.settings import DashboardSettings
from api.state import DashboardState
from hivemind_exp.common.settings_base import load_settings
from hivemind_exp.swarm.reader import SwarmSnapshot

COORD = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


class Outage:
    """Readers that all fail while `down`; counts the joins (factory calls) and closes."""

    def __init__(self) -> None:
        self.down = True
        self.joins = 0
        self.closed = 0
        self.polls = 0

    def factory(self, peers: Sequence[str]) -> "Outage.Reader":
        self.joins += 1
        return Outage.Reader(self)

    class Reader:
        def __init__(self, outage: "Outage") -> None:
            self.outage = outage

        def poll(self, rounds: Sequence[int], gossip_peers: Sequence[str]) -> SwarmSnapshot:
            self.outage.polls += 1
            if self.outage.down:
                raise ConnectionError("swarm reader unreachable")
            return SwarmSnapshot(round=None, stage=None)

        def close(self) -> None:
            self.outage.closed += 1


def make(tmp_path: Path, outage: Outage) -> Poller:
    settings = load_settings(DashboardSettings, chain="off", initial_peers=[f"/ip4/127.0.0.1/tcp/1/p2p/{COORD}"],
                             identity_file=tmp_path / "none.pem", data_dir=tmp_path, ui_dist=tmp_path / "dist")
    return Poller(settings, DashboardState(), swarm_factory=outage.factory, chain_factory=None)


async def run_polls(p: Poller, outage: Outage, n: int) -> None:
    """`n` DHT polls exactly as the polling loop does them (failures recorded in the state)."""
    for _ in range(n):
        try:
            await p._poll_dht()
        except Exception as exc:
            p.state.poll_failed("dht", f"{type(exc).__name__}: {exc}")


def rejoin_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == poller_mod.log.name and r.levelno >= logging.WARNING
            and "rejoining" in r.getMessage()]


def test_a_long_outage_rejoins_every_few_failures_and_warns_once(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=poller_mod.log.name)
    outage = Outage()
    p = make(tmp_path, outage)

    async def scenario() -> None:
        polls = 4 * REJOIN_AFTER
        await run_polls(p, outage, polls)
        assert p.state.dht.consecutive_failures == polls
        # A join at the start and after each rejoin, which comes every REJOIN_AFTER failures
        # (the 4th just happened, so its join is still to come): not one per poll.
        assert (outage.joins, outage.closed) == (4, 4)
        assert len(rejoin_warnings(caplog)) == 1

        outage.down = False  # the reader is back: healthy again, and the next outage warns afresh
        await run_polls(p, outage, 1)
        assert p.state.dht.consecutive_failures == 0
        outage.down = True
        await run_polls(p, outage, REJOIN_AFTER)
        assert len(rejoin_warnings(caplog)) == 2
        await p.stop()

    asyncio.run(scenario())
