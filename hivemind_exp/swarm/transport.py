"""`SwarmTransport`: what a node needs from the swarm, independent of the DHT behind it.

Rules every implementation keeps:

- Fetches take a timeout and return whatever arrived by then (possibly nothing); they
  never raise because the network is slow or a peer is gone.
- Only records that pass every check are returned; the rest are dropped and counted
  in `drop_counts()` (reasons such as ``bad_signature``, ``forged``, ``schema``,
  ``oversize``, ``wrong_key``, ``untrusted``, ``chunk_mismatch``, ``incomplete``).
- Publishes return whether every record was stored; they raise only for bad input
  (e.g. a record over the payload cap), never for a network problem.
- The transport holds no round state: a node can drop it and build a new one.
- A per-peer read of the default peer set asks for at most ``dht_max_peers_per_read`` peers,
  chosen by `hivemind_exp.swarm.read_set.read_set` from the round and the peer IDs alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from hivemind_exp.swarm.records import EvalSummary, OutputRecord, PeerInfo, RolloutGroup, RoundState, SapoStats


class SwarmStartupError(RuntimeError):
    """The swarm could not be joined; the message names the cause and the setting to change."""


class SwarmClosedError(RuntimeError):
    """The transport was used after `close()`."""


@runtime_checkable
class SwarmTransport(Protocol):
    @property
    def peer_id(self) -> str:
        """This node's base58 peer ID."""
        ...

    def publish_outputs(self, round_num: int, stage: int, outputs: Mapping[str, OutputRecord]) -> bool:
        """Store this node's outputs of a stage, one per question hash."""
        ...

    def fetch_outputs(self, round_num: int, stage: int, timeout: float | None = None,
                      peers: Iterable[str] | None = None) -> dict[str, dict[str, OutputRecord]]:
        """Outputs of a stage: ``{peer_id: {question_hash: record}}``.

        peers: an explicit list is read whole; by default the listed peers + self, at most
        ``dht_max_peers_per_read`` of them chosen by `read_set.read_set` (self always among them).
        """
        ...

    def publish_rollouts(self, round_num: int, groups: Mapping[str, RolloutGroup]) -> bool:
        """SAPO game: store this node's rollout groups of a round, one per group key."""
        ...

    def fetch_rollouts(self, round_num: int, timeout: float | None = None,
                       peers: Iterable[str] | None = None) -> dict[str, dict[str, RolloutGroup]]:
        """Rollout groups of a round: ``{peer_id: {group_key: group}}`` (peers: as `fetch_outputs`)."""
        ...

    def publish_reward(self, round_num: int, stage: int, reward: float) -> bool: ...

    def fetch_rewards(self, round_num: int, stage: int, timeout: float | None = None) -> dict[str, float]: ...

    def publish_winners(self, round_num: int, winners: Sequence[str]) -> bool: ...

    def fetch_winners(self, round_num: int, timeout: float | None = None) -> dict[str, list[str]]:
        """``{voter_peer_id: [winner peer IDs]}`` for a round."""
        ...

    def publish_round_state(self, round_num: int, stage: int, stage_deadline_unix: float,
                            game: str = "three-stage") -> bool:
        """Coordinator only: readers trust this record from the configured coordinator peer ID alone."""
        ...

    def fetch_round_state(self, timeout: float | None = None) -> RoundState | None: ...

    def heartbeat(self, name: str | None = None, wallet: str | None = None,
                  evaluation: EvalSummary | None = None, sapo: SapoStats | None = None) -> bool:
        """Announce this node in the peer directory (call well within the peer TTL); name, wallet,
        the latest held-out evaluation and SAPO round stats are remembered and repeated by later
        heartbeats."""
        ...

    def list_peers(self, timeout: float | None = None) -> list[PeerInfo]: ...

    def visible_maddrs(self) -> list[str]:
        """Full multiaddrs (with /p2p/ID) other peers can use as initial_peers."""
        ...

    def drop_counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def close_quietly(transport: SwarmTransport | None) -> None:
    """Close a transport on shutdown; a failure there must not hide the reason the service stops."""
    if transport is None:
        return
    try:
        transport.close()
    except Exception as err:  # noqa: BLE001 - closing is best effort
        logging.getLogger(__name__).debug("transport close: %s", err)
