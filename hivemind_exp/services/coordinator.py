"""The coordinator: the swarm's bootstrap peer and stage manager.

It listens on the well-known DHT port so peers can join through it, and keeps the swarm's
clock: it publishes the current (round, stage, deadline) as a signed DHT record and moves
on when the stage deadline passes, or earlier once every live peer has published the
stage's outputs (after `min_stage_seconds`). With chain mode on, the contract is the
authority: the coordinator calls `updateStageAndRound` and mirrors the chain's values
(plus the deadline, which the chain does not keep) on the DHT.

A restarted coordinator continues from the chain, or from its own last DHT record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hivemind_exp.game import stage as stages
from hivemind_exp.services.settings import CoordinatorSettings

if TYPE_CHECKING:
    from hivemind_exp.chain.client import ChainClient
    from hivemind_exp.swarm.transport import SwarmTransport
    from hivemind_exp.common.telemetry import Telemetry, TrainerMetrics

log = logging.getLogger(__name__)


class Coordinator:
    """The stage manager. Like `TrainerNode`, it takes its collaborators (transport, chain client,
    clock) when given and builds the rest in `setup()`; `tick()` is one pass of its loop."""

    def __init__(self, settings: CoordinatorSettings, stop_event: threading.Event | None = None, *,
                 transport: SwarmTransport | None = None, chain: ChainClient | None = None,
                 clock: Callable[[], float] = time.time, wait: Callable[[float], bool] | None = None,
                 telemetry: bool = True):
        self.s = settings
        self.stop = stop_event or threading.Event()
        self.clock = clock  # wall time: deadlines are published as unix seconds
        self.wait = wait or self.stop.wait  # sleeps between start-up lookups; True = stop now
        self.transport: SwarmTransport | None = transport
        self.chain: ChainClient | None = chain
        self._telemetry_on = telemetry
        self.telemetry: Telemetry | None = None
        self.metrics: TrainerMetrics | None = None
        self.round = 0
        self.stage = 1
        self.stage_started = 0.0
        self.deadline = 0.0
        self.rounds_done = 0
        self._last_publish = 0.0

    def setup(self) -> None:
        if self.transport is not None:
            peer_id = self.transport.peer_id
        else:
            from hivemind_exp.swarm.identity import ensure_identity, load_peer_id

            ensure_identity(self.s.identity_path)
            peer_id = load_peer_id(self.s.identity_path)
        if self._telemetry_on:
            from hivemind_exp.common.telemetry import setup_telemetry

            self.telemetry = setup_telemetry("rl-swarm-coordinator", {"peer_id": peer_id},
                                             prometheus_port=self.s.metrics_port or None)
            self.metrics = self.telemetry.trainer_metrics()
        if self.chain is None and self.s.chain_mode != "off":
            from hivemind_exp.chain.client import build_client

            self.chain = build_client(self.s)
        if self.chain is not None:
            log.info("chain mode %s: round/stage authority is contract %s", self.s.chain_mode,
                     self.chain.contract_address)
        if self.transport is None:
            # The coordinator trusts its own round-state records (to resume after a restart).
            self.transport = self._start_transport(self.s.model_copy(update={"coordinator_peer_id": peer_id}))
        maddrs = self.transport.visible_maddrs()
        log.info("coordinator peer %s listening; peers join with --initial-peers %s", peer_id,
                 maddrs[0] if maddrs else "(none)")
        self._announce_on_chain(maddrs)
        if self.s.bootnode_file:
            import json

            from hivemind_exp.common.fileio import atomic_write_text

            atomic_write_text(Path(self.s.bootnode_file), json.dumps({"peer_id": peer_id, "maddrs": maddrs}))
        print(f"coordinator ready: {' '.join(maddrs)}", flush=True)
        self._resume()

    def _start_transport(self, settings: CoordinatorSettings) -> Any:
        """Start the DHT; after a restart, rejoin the peers it knew, or the swarm would split in two."""
        from hivemind_exp.swarm.hivemind_transport import HivemindTransport
        from hivemind_exp.swarm.transport import SwarmStartupError

        known = [m for m in self._load_state().get("peers", []) if isinstance(m, str)]
        if known and not settings.initial_peers:
            try:
                transport = HivemindTransport.start(settings.model_copy(update={
                    "initial_peers": known, "dht_startup_retries": 0, "dht_check_identity_free": False}))
                log.info("rejoined %d peer address(es) known from %s", len(known), self.s.state_file)
                return transport
            except SwarmStartupError as err:
                log.info("none of the peers known from the last run answered (%s); starting afresh",
                         str(err).splitlines()[0])
        return HivemindTransport.start(settings)

    def _load_state(self) -> dict[str, Any]:
        if not self.s.state_file or not Path(self.s.state_file).is_file():
            return {}
        import json

        try:
            data = json.loads(Path(self.s.state_file).read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable %s (%s)", self.s.state_file, err)
            return {}

    def _save_state(self) -> None:
        if not self.s.state_file:
            return
        import json

        from hivemind_exp.common.fileio import atomic_write_text

        peers: list[str] = []
        try:
            for info in self.transport.list_peers(timeout=3):
                peers.extend(m for m in info.maddrs if "/p2p/" in m)
        except Exception as err:  # noqa: BLE001 - the peer list is a hint for restarts only
            log.debug("list_peers failed: %s", err)
        if not peers:
            peers = self._load_state().get("peers", [])
        atomic_write_text(Path(self.s.state_file),
                          json.dumps({"round": self.round, "stage": self.stage, "peers": peers[:64]}))

    def _announce_on_chain(self, maddrs: list[str]) -> None:
        """List this bootnode on the contract (when allowed) so trainers can join with no --initial-peers."""
        if self.chain is None or not maddrs or not hasattr(self.chain, "add_bootnodes"):
            return
        from hivemind_exp.chain.errors import ChainError

        try:
            if maddrs[0] in self.chain.bootnodes():
                return
            if not self.chain.has_role("BOOTNODE_MANAGER_ROLE", self.chain.address):
                log.info("this wallet is not a bootnode manager: not listing %s on chain", maddrs[0])
                return
            self.chain.add_bootnodes([maddrs[0]])
            log.info("listed %s as a bootnode on chain", maddrs[0])
        except ChainError as err:
            log.warning("could not list this bootnode on chain: %s", err)

    def _resume(self) -> None:
        if self.chain is not None:
            r, s0 = self.chain.round_and_stage()
            self.round, self.stage = r, stages.from_chain(self.s.game, s0)
            log.info("continuing from the chain: round %d stage %d", self.round, self.stage)
        else:
            prev = self._saved_round()
            if prev is not None:
                # Start the round after the one in flight: its peers may have finished it meanwhile.
                self.round, self.stage = prev[0] + 1, 1
                log.info("found my earlier round state (round %d stage %d); starting round %d", prev[0], prev[1],
                         self.round)
        self._begin_stage()

    def _saved_round(self) -> tuple[int, int] | None:
        saved = self._load_state()
        if "round" in saved and "stage" in saved:
            try:
                return int(saved["round"]), int(saved["stage"])
            except (TypeError, ValueError):
                log.warning("ignoring bad round/stage in %s", self.s.state_file)
        # The record lives on the peers' DHT nodes; right after a restart the routing table is
        # still filling, so look a few times before concluding this is a new swarm.
        for attempt in range(4):
            prev = self.transport.fetch_round_state(timeout=5)
            if prev is not None:
                return prev.round, prev.stage
            if attempt < 3 and self.wait(2.0):
                break
        return None

    def _begin_stage(self) -> None:
        self.stage_started = self.clock()
        self.deadline = self.stage_started + self.s.stage_seconds
        self._save_state()
        self._publish()
        log.info("round %d stage %d started (%s); deadline in %.0f s", self.round, self.stage,
                 stages.stage_name(self.s.game, self.stage), self.s.stage_seconds)
        if self.metrics:
            self.metrics.set_round(self.round, self.stage)

    def _publish(self) -> None:
        self._last_publish = self.clock()
        ok = self.transport.publish_round_state(self.round, self.stage, self.deadline, game=self.s.game)
        if not ok:
            log.warning("round state (round %d stage %d) not confirmed by the DHT; will re-publish", self.round,
                        self.stage)

    def _everyone_published(self) -> bool:
        peers = {p.peer_id for p in self.transport.list_peers(timeout=3)} - {self.transport.peer_id}
        if len(peers) < self.s.early_advance_min_peers:
            return False  # peers still starting up would miss the stage
        if self.s.game == "sapo":
            got = self.transport.fetch_rollouts(self.round, timeout=3, peers=peers)
        else:
            got = self.transport.fetch_outputs(self.round, self.stage, timeout=3, peers=peers)
        return peers <= {p for p, recs in got.items() if recs}

    def _advance(self) -> bool:
        if self.chain is not None:
            from hivemind_exp.chain.errors import ChainError

            try:
                _, (r, s0) = self.chain.update_stage_and_round()
                # A SAPO round is one stage: step the contract's 3-stage clock (0.4.2's stageCount()
                # is a constant) through to the next round. Each call is idempotent in effect: a
                # retry after a failure continues from wherever the chain is.
                while self.s.game == "sapo" and r == self.round:
                    _, (r, s0) = self.chain.update_stage_and_round()
            except ChainError as err:
                log.warning("updateStageAndRound failed (%s); keeping round %d stage %d and retrying", err,
                            self.round, self.stage)
                return False
            new_round, new_stage = r, stages.from_chain(self.s.game, s0)
        else:
            last = self.s.stages_per_round
            new_round, new_stage = (self.round, self.stage + 1) if self.stage < last else (self.round + 1, 1)
        if new_round != self.round:
            self.rounds_done += 1
        self.round, self.stage = new_round, new_stage
        self._begin_stage()
        return True

    def run(self) -> int:
        while not self.stop.wait(1.0):
            if self.tick() == "finished":
                return 0
        return 0

    def tick(self) -> str:
        """One pass: "finished" (--max-rounds), "advanced", "chain-retry", "republished" or "waiting"."""
        now = self.clock()
        if self.s.max_rounds is not None and self.rounds_done >= self.s.max_rounds:
            log.info("%d round(s) done (--max-rounds); coordinator stopping", self.rounds_done)
            return "finished"
        early = (self.s.early_advance and now - self.stage_started >= self.s.min_stage_seconds
                 and self._everyone_published())
        if now >= self.deadline or early:
            if early:
                log.info("every live peer published round %d stage %d; moving on early", self.round, self.stage)
            return "advanced" if self._advance() else "chain-retry"
        if now - self._last_publish >= self.s.republish_seconds:
            self._publish()
            self._save_state()
            return "republished"
        return "waiting"

    def shutdown(self) -> None:
        self.stop.set()
        from hivemind_exp.swarm.transport import close_quietly

        close_quietly(self.transport)
        if self.telemetry is not None:
            self.telemetry.shutdown()
