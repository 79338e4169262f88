"""Which peers' records one per-peer read asks for, when the swarm is bigger than the read cap.

A node reads other peers' records every stage (three-stage game: stage 1 answers at stage 2,
answers and critiques at stage 3, final answers for the round's winners; SAPO: rollout
groups). Asking for every peer in the directory costs each node O(N) DHT lookups, the swarm
O(N^2). `read_set` bounds one read to `cap` peers:

- Every candidate's position on a ring is ``sha256(namespace, round, peer id)``: a function
  of public data that no reader chooses, so a reader cannot pick whose records it reads
  (and so whom it rewards or votes for). Short of grinding a new identity for one round
  number, a peer cannot steer where it, or anyone else, lands.
- A reader reads itself and the ``cap - 1`` peers that follow it on the ring. When readers
  see the same directory, each peer is read by exactly ``cap`` readers (itself and its
  ``cap - 1`` predecessors): every peer's records are read by someone, and none are read by
  everyone. A few entries more or less in one reader's view shift its window by as many
  places; they do not reshuffle it.
- The ring depends on the round, not the stage, so a node reads the same peers at every
  stage of a round: the critiques it weighs at stage 3 come from the peers whose answers it
  read at stage 2, and the final answers it scores for the winners come from them too. A
  new round reshuffles the ring, so no pair of peers is bound together for long.
- It is a pure function of (candidates, reader, round, cap, namespace): a restarted node
  reads the same set.
- Peers the reader must read (`always`, and the reader itself) are never dropped; they count
  towards the cap.

With ``cap <= 0`` or at most `cap` candidates every candidate is read, as without a cap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# Up to this many peers a read asks for every peer: small swarms behave as without a cap.
DEFAULT_MAX_PEERS_PER_READ = 16


def check_cap(cap: int) -> int:
    """`cap` if it is a usable read cap; ValueError otherwise (1 would read only the reader's own records)."""
    if cap == 1 or cap < 0:
        raise ValueError(f"a read cap must be 0 (no cap: read every peer) or at least 2 (the reader and one more "
                         f"peer), got {cap}")
    return cap


def ring_position(namespace: str, round_num: int, peer_id: str) -> bytes:
    """A peer's place on the round's ring (compare as bytes)."""
    return hashlib.sha256(f"rl-swarm/read-set\0{namespace}\0{round_num}\0{peer_id}".encode()).digest()


def read_set(candidates: Iterable[str], reader: str, round_num: int, cap: int, *, namespace: str = "",
             always: Iterable[str] = ()) -> list[str]:
    """The peer IDs (sorted) whose records `reader` asks for in a read of round `round_num`."""
    must = {reader, *always}
    ids = set(candidates) | must
    if cap <= 0 or len(ids) <= cap:
        return sorted(ids)
    ring = sorted(ids, key=lambda p: ring_position(namespace, round_num, p))
    start = ring.index(reader)
    chosen = set(must)
    for step in range(1, len(ring)):
        if len(chosen) >= cap:
            break
        chosen.add(ring[(start + step) % len(ring)])
    return sorted(chosen)
