"""The dashboard's in-memory cache: merges poll results and precomputes response bodies.

`DashboardState` is plain synchronous code, touched only from the event loop: the poller
hands it snapshots (`apply_swarm`, `apply_chain`, ...), it rebuilds the default response
bodies once (JSON bytes), and requests just send those bytes. Less common requests (a page
other than the first, a search) are built from the cached rows and memoised until the next
change, so a burst of identical requests costs one build.

Everything kept is bounded: `history_rounds` rounds of rewards (at most `max_peers` peers per
stage), `max_peers` peers, `gossip_size` gossip items. When it must evict, it keeps the peers
with evidence first (rewarded on chain, the local trainer, reward records in more kept rounds)
and drops the least recently seen of the rest, so a flood of fresh identities cannot push
real peers off the dashboard.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from api import models
from api.sources import ChainSnapshot, GossipItem, SwarmSnapshot
from hivemind_exp.game import stage as game_stage
from hivemind_exp.swarm.names import name_to_peer_candidates, peer_name
from hivemind_exp.swarm.records import EvalSummary, SapoStats

DEFAULT_PAGE = 100
DEFAULT_SERIES = 10
DEFAULT_GOSSIP = 30
MEMO_SIZE = 256


@dataclass
class SourceStatus:
    configured: bool = True
    last_success: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0

    def view(self, now: float, stale_after: float, started_at: float) -> models.SourceHealth:
        age = None if self.last_success is None else max(0.0, now - self.last_success)
        # Before the first success the service's start is the baseline: a fresh start is
        # not unhealthy until the limit has passed without one good read.
        since = self.last_success if self.last_success is not None else started_at
        ok = (not self.configured) or now - since <= stale_after
        return models.SourceHealth(configured=self.configured, ok=ok, last_success=self.last_success, age_s=age,
                                   last_error=self.last_error, consecutive_failures=self.consecutive_failures)


@dataclass
class LocalNode:
    """The trainer on this machine, as far as the dashboard knows it."""

    peer_id: str | None = None
    reason: str | None = "no local trainer configured: set RLSWARM_LOCAL_PEER_ID or --identity-file"
    pending: int | None = None
    failed: int | None = None


def _dumps(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


@dataclass
class DashboardState:
    history_rounds: int = 50
    max_peers: int = 2000
    gossip_size: int = 100
    game: str = "three-stage"  # from the coordinator's round record
    login_url: str = "http://127.0.0.1:3000"
    dht: SourceStatus = field(default_factory=SourceStatus)
    chain_status: SourceStatus = field(default_factory=lambda: SourceStatus(configured=False))
    local: LocalNode = field(default_factory=LocalNode)

    started_at: float = field(default_factory=time.time)
    version: int = 0
    round: int | None = None
    stage: int | None = None
    stage_deadline: float | None = None
    chain: ChainSnapshot | None = None
    updated_at: float | None = None
    # peer -> last seen; insertion order = least recently seen first (for eviction)
    peers: OrderedDict[str, float] = field(default_factory=OrderedDict)
    evals: dict[str, EvalSummary] = field(default_factory=dict)  # peer -> latest held-out evaluation
    sapo: dict[str, SapoStats] = field(default_factory=dict)  # peer -> latest SAPO round stats
    # round -> stage -> peer -> points; rounds ascending
    rewards: OrderedDict[int, dict[int, dict[str, float]]] = field(default_factory=OrderedDict)
    winners: dict[int, list[str]] = field(default_factory=dict)
    gossip: OrderedDict[tuple[str, int, int, str, str], GossipItem] = field(default_factory=OrderedDict)

    names: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    _memo: OrderedDict[tuple[Any, ...], bytes] = field(default_factory=OrderedDict)
    _asked: set[int] = field(default_factory=set)  # rounds whose rewards were read at least once
    _board_rows: list[models.LeaderboardEntry] = field(default_factory=list)
    _board_round: int | None = None
    _cumulative_rows: list[models.CumulativeEntry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rebuild()

    # ------------------------------------------------------------------ ingest

    def name(self, peer_id: str) -> str:
        n = self.names.get(peer_id)
        if n is None:
            n = peer_name(peer_id)
            if len(self.names) > 4 * self.max_peers:  # names of long-gone peers
                self.names.clear()
            self.names[peer_id] = n
        return n

    def apply_swarm(self, snap: SwarmSnapshot) -> None:
        """Merge one DHT read (never removes history: a round missing from `snap` stays)."""
        if snap.round is not None:
            self.round, self.stage, self.stage_deadline = snap.round, snap.stage, snap.stage_deadline
        if snap.game is not None:
            self.game = snap.game
        for p in snap.peers:
            prev = self.peers.pop(p.peer_id, None)
            self.peers[p.peer_id] = max(p.last_seen, prev or 0.0)
            old = self.evals.get(p.peer_id)
            if p.evaluation is not None and (old is None or p.evaluation.at >= old.at):
                self.evals[p.peer_id] = p.evaluation
            old_sapo = self.sapo.get(p.peer_id)
            if p.sapo is not None and (old_sapo is None or p.sapo.at >= old_sapo.at):
                self.sapo[p.peer_id] = p.sapo
        for (rnd, stg), by_peer in snap.rewards.items():
            self._asked.add(rnd)
            if not by_peer:
                continue
            stages = self.rewards.setdefault(rnd, {})
            stages.setdefault(stg, {}).update(by_peer)
        if snap.rewards:
            self.rewards = OrderedDict(sorted(self.rewards.items()))
        while len(self.rewards) > self.history_rounds:
            self.rewards.popitem(last=False)
        self._evict()
        self.winners.update(snap.winners)
        for old in sorted(self.winners)[: max(0, len(self.winners) - self.history_rounds)]:
            del self.winners[old]
        for item in snap.gossip:
            key = (item.peer_id, item.round, item.stage, item.kind, item.question)
            if key not in self.gossip:
                self.gossip[key] = item
        if len(self.gossip) > self.gossip_size:
            newest = sorted(self.gossip.items(), key=lambda kv: kv[1].time)[-self.gossip_size :]
            self.gossip = OrderedDict(newest)
        self.dht.last_success, self.dht.last_error, self.dht.consecutive_failures = snap.taken_at, None, 0
        self.rebuild()

    def _evict(self) -> None:
        """Bring peers and per-stage rewards back under `max_peers`, keeping those with evidence."""
        too_many_rewards = [(stg_map, stg) for stages in self.rewards.values() for stg, stg_map in stages.items()
                            if len(stg_map) > self.max_peers]
        if len(self.peers) <= self.max_peers and not too_many_rewards:
            self.peers = OrderedDict(sorted(self.peers.items(), key=lambda kv: kv[1]))
            return
        rounds_rewarded: dict[str, int] = {}
        for stages in self.rewards.values():
            for p in set().union(*stages.values()) if stages else ():
                rounds_rewarded[p] = rounds_rewarded.get(p, 0) + 1
        chain = self.chain
        vouched = set(chain.total_rewards) | set(chain.total_wins) if chain else set()
        if self.local.peer_id:
            vouched.add(self.local.peer_id)

        def score(p: str) -> tuple[bool, int, bool, float]:
            return (p in vouched, rounds_rewarded.get(p, 0), p in self.peers, self.peers.get(p, 0.0))

        if len(self.peers) > self.max_peers:
            keep = sorted(self.peers, key=score)[-self.max_peers:]
            for gone in set(self.peers) - set(keep):
                self.evals.pop(gone, None)
                self.sapo.pop(gone, None)
            self.peers = OrderedDict(sorted(((p, self.peers[p]) for p in keep), key=lambda kv: kv[1]))
        else:
            self.peers = OrderedDict(sorted(self.peers.items(), key=lambda kv: kv[1]))
        for stg_map, _stg in too_many_rewards:
            for gone in sorted(stg_map, key=score)[: len(stg_map) - self.max_peers]:
                del stg_map[gone]

    def apply_chain(self, snap: ChainSnapshot) -> None:
        self.chain = snap
        self.chain_status.configured = True
        self.chain_status.last_success, self.chain_status.last_error = snap.taken_at, None
        self.chain_status.consecutive_failures = 0
        self.rebuild()

    def poll_failed(self, source: str, error: str) -> None:
        status = self.dht if source == "dht" else self.chain_status
        status.last_error = error[:500]
        status.consecutive_failures += 1
        self.rebuild_health_only()

    def set_chain_configured(self, configured: bool) -> None:
        if self.chain_status.configured != configured:
            self.chain_status.configured = configured
            self.rebuild_health_only()

    def set_local(self, local: LocalNode) -> None:
        if local != self.local:
            self.local = local
            self.rebuild()

    # ------------------------------------------------------------------ queries used by the poller

    def rounds_wanted(self, backfill: int = 3) -> list[int]:
        """Rounds whose rewards the next DHT poll should read: current, previous, a few missing older ones."""
        # The DHT's round (the coordinator's record) first; the chain's when that is not trusted/known.
        cur = self.round if self.round is not None else (self.chain.round if self.chain is not None else None)
        if cur is None:
            return []
        wanted = [r for r in (cur, cur - 1) if r >= 0]
        oldest = max(0, cur - self.history_rounds + 1)
        # Older rounds are asked for once each (a round nobody rewarded stays empty).
        self._asked = {r for r in self._asked if r >= oldest}
        missing = [r for r in range(cur - 2, oldest - 1, -1) if r not in self.rewards and r not in self._asked]
        return wanted + missing[:backfill]

    def gossip_peers(self, count: int, offset: int) -> list[str]:
        """A rotating sample of recently seen peers whose outputs the next poll reads."""
        recent = list(reversed(self.peers))[: max(count * 4, count)]
        if not recent:
            return []
        start = offset % len(recent)
        return (recent[start:] + recent[:start])[:count]

    def known_peer_ids(self) -> list[str]:
        ids = list(reversed(self.peers))
        seen = set(ids)
        for stages in self.rewards.values():
            for by_peer in stages.values():
                for p in by_peer:
                    if p not in seen:
                        seen.add(p)
                        ids.append(p)
        return ids

    # ------------------------------------------------------------------ building bodies

    def _now(self) -> float:
        return time.time()

    def rebuild_health_only(self) -> None:
        self.version += 1
        self._memo.clear()

    def rebuild(self) -> None:
        now = self._now()
        self.updated_at = now
        self.version += 1
        self._memo.clear()
        me = self.local.peer_id
        self._build_board(me)
        self._build_cumulative(me)
        b = self.bodies
        b["round_and_stage"] = _dumps(self.round_and_stage())
        b["leaderboard"] = self.leaderboard_body(DEFAULT_PAGE, 0, None)
        b["leaderboard_cumulative"] = self.cumulative_body(DEFAULT_PAGE, 0)
        b["rewards_history"] = self.history_body(DEFAULT_SERIES)
        b["gossip"] = self.gossip_body(DEFAULT_GOSSIP)
        nodes = [models.Node(peer_id=p, name=self.name(p), last_seen=t,
                             age_s=max(0.0, (self.dht.last_success or now) - t), is_me=p == me,
                             evaluation=self._evaluation(p), sapo=self._sapo(p))
                 for p, t in reversed(self.peers.items())]
        b["nodes"] = _dumps(models.Nodes(count=len(nodes), nodes=nodes, updated_at=now))
        b["me"] = _dumps(self.me())

    def round_and_stage(self) -> models.RoundAndStage:
        c = self.chain
        if self.round is not None:
            rnd, stg, src = self.round, self.stage, "dht"
        elif c is not None:
            rnd, stg, src = c.round, game_stage.from_chain(self.game, c.stage), "chain"
        else:
            rnd, stg, src = None, None, "none"
        return models.RoundAndStage(game=self.game, round=rnd, stage=stg,
                                    stage_name=game_stage.stage_name(self.game, stg),
                                    stage_names=list(game_stage.stage_names(self.game)), stage_count=self.stage_count,
                                    stage_deadline=self.stage_deadline if src == "dht" else None,
                                    source=src, chain_round=c.round if c else None,
                                    chain_stage=game_stage.from_chain(self.game, c.stage) if c else None,
                                    updated_at=self.updated_at)

    @property
    def stage_count(self) -> int:
        return game_stage.stage_count(self.game)

    def _board_round_choice(self) -> int | None:
        cur = self.round if self.round is not None else (self.chain.round if self.chain else None)
        if cur is not None and self.rewards.get(cur):
            return cur
        earlier = [r for r in self.rewards if cur is None or r <= cur]
        return earlier[-1] if earlier else cur

    def _build_board(self, me: str | None) -> None:
        rnd = self._board_round_choice()
        by_stage = self.rewards.get(rnd, {}) if rnd is not None else {}
        ids = set(self.peers)
        for by_peer in by_stage.values():
            ids.update(by_peer)
        rows = []
        for pid in ids:
            per_stage = [by_stage.get(s, {}).get(pid) for s in range(1, self.stage_count + 1)]
            total = sum(v for v in per_stage if v is not None)
            rows.append((total, pid, per_stage))
        rows.sort(key=lambda r: (-r[0], self.name(r[1]), r[1]))
        self._board_round = rnd
        self._board_rows = [
            models.LeaderboardEntry(rank=i + 1, peer_id=pid, name=self.name(pid), reward=round(total, 4),
                                    stage_rewards=per_stage, is_me=pid == me)
            for i, (total, pid, per_stage) in enumerate(rows)
        ]

    def _memoised(self, key: tuple[Any, ...], build: Callable[[], bytes]) -> bytes:
        body = self._memo.get(key)
        if body is None:
            body = build()
            self._memo[key] = body
            if len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return body

    def leaderboard_body(self, limit: int, offset: int, query: str | None) -> bytes:
        def build() -> bytes:
            rows = self._board_rows
            if query:
                q = query.strip().lower()
                rows = [r for r in rows if q in r.name or q in r.peer_id.lower()]
            return _dumps(models.Leaderboard(round=self._board_round, total=len(rows), offset=offset, limit=limit,
                                             query=query or None, entries=rows[offset : offset + limit],
                                             updated_at=self.updated_at))

        return self._memoised(("board", limit, offset, (query or "").strip().lower()), build)

    def _build_cumulative(self, me: str | None) -> None:
        c = self.chain
        if c is None:
            self._cumulative_rows = []
            return
        ids = set(c.total_rewards) | {p for p, w in c.total_wins.items() if w}
        rows = sorted(ids, key=lambda p: (-c.total_rewards.get(p, 0.0), -c.total_wins.get(p, 0), self.name(p), p))
        self._cumulative_rows = [
            models.CumulativeEntry(rank=i + 1, peer_id=p, name=self.name(p),
                                   total_rewards=c.total_rewards.get(p, 0.0), total_wins=c.total_wins.get(p, 0),
                                   is_me=p == me)
            for i, p in enumerate(rows)
        ]

    def cumulative_body(self, limit: int, offset: int) -> bytes:
        def build() -> bytes:
            if self.chain is None:
                reason = ("no chain configured (set RLSWARM_CONTRACT_ADDRESS or start `rl-swarm chain`)"
                          if not self.chain_status.configured else
                          f"the chain has not been read yet: {self.chain_status.last_error or 'first poll pending'}")
                return _dumps(models.CumulativeLeaderboard(available=False, reason=reason, total=0, offset=offset,
                                                           limit=limit, entries=[], updated_at=None))
            rows = self._cumulative_rows
            return _dumps(models.CumulativeLeaderboard(available=True, reason=None, total=len(rows), offset=offset,
                                                       limit=limit, entries=rows[offset : offset + limit],
                                                       updated_at=self.chain.taken_at))

        return self._memoised(("cumulative", limit, offset), build)

    def round_totals(self) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for rnd, stages in self.rewards.items():
            per: dict[str, float] = {}
            for by_peer in stages.values():
                for p, v in by_peer.items():
                    per[p] = per.get(p, 0.0) + v
            out[rnd] = per
        return out

    def history_body(self, limit: int, peer_id: str | None = None) -> bytes:
        def build() -> bytes:
            totals = self.round_totals()
            rounds = sorted(totals)
            overall: dict[str, float] = {}
            for per in totals.values():
                for p, v in per.items():
                    overall[p] = overall.get(p, 0.0) + v
            top = sorted(overall, key=lambda p: (-overall[p], p))[:limit]
            for extra in (self.local.peer_id, peer_id):
                if extra and extra in overall and extra not in top:
                    top.append(extra)
            series = [
                models.RewardSeries(peer_id=p, name=self.name(p), is_me=p == self.local.peer_id,
                                    points=[models.RewardPoint(round=r, reward=round(totals[r][p], 4))
                                            for r in rounds if p in totals[r]])
                for p in top
            ]
            return _dumps(models.RewardsHistory(rounds=rounds, series=series, updated_at=self.updated_at))

        return self._memoised(("history", limit, peer_id), build)

    def gossip_body(self, limit: int) -> bytes:
        def build() -> bytes:
            items = sorted(self.gossip.values(), key=lambda g: (g.time, g.round, g.stage), reverse=True)[:limit]
            entries = [models.GossipEntry(peer_id=g.peer_id, name=self.name(g.peer_id), round=g.round, stage=g.stage,
                                          stage_name=game_stage.stage_name(self.game, g.stage), kind=g.kind,
                                          question=g.question, answer=g.answer, time=g.time)
                       for g in items]
            return _dumps(models.Gossip(entries=entries, updated_at=self.updated_at))

        return self._memoised(("gossip", limit), build)

    def me(self) -> models.Me:
        pid = self.local.peer_id
        if pid is None:
            return models.Me(known=False, reason=self.local.reason, peer_id=None, name=None, wallet=None, online=False,
                             last_seen=None, round_reward=None, rank=None, total_rewards=None, total_wins=None,
                             pending_submissions=None, failed_submissions=None, login_url=self.login_url,
                             updated_at=self.updated_at)
        row = next((r for r in self._board_rows if r.peer_id == pid), None)
        last_seen = self.peers.get(pid)
        c = self.chain
        online = last_seen is not None and self.dht.last_success is not None and \
            self.dht.last_success - last_seen < 120
        return models.Me(known=True, reason=None, peer_id=pid, name=self.name(pid),
                         wallet=c.local_wallet if c else None, online=online, last_seen=last_seen,
                         round_reward=row.reward if row else None, rank=row.rank if row else None,
                         total_rewards=c.total_rewards.get(pid) if c else None,
                         total_wins=c.total_wins.get(pid) if c else None,
                         pending_submissions=self.local.pending, failed_submissions=self.local.failed,
                         evaluation=self._evaluation(pid), sapo=self._sapo(pid), login_url=self.login_url,
                         updated_at=self.updated_at)

    def _evaluation(self, peer_id: str) -> models.Evaluation | None:
        ev = self.evals.get(peer_id)
        if ev is None:
            return None
        return models.Evaluation(round=ev.round, accuracy=ev.accuracy, format_rate=ev.format_rate,
                                 problems=ev.problems, at=ev.at)

    def _sapo(self, peer_id: str) -> models.SapoRound | None:
        st = self.sapo.get(peer_id)
        if st is None:
            return None
        return models.SapoRound(round=st.round, shared=st.shared, taken=st.taken, trained=st.trained,
                                with_signal=st.with_signal, dropped=st.dropped, at=st.at)

    def health(self, dht_stale_after: float, chain_stale_after: float) -> tuple[bool, models.Health]:
        now = self._now()
        dht = self.dht.view(now, dht_stale_after, self.started_at)
        chain = self.chain_status.view(now, chain_stale_after, self.started_at)
        reasons = []
        for name, view, limit in (("DHT", dht, dht_stale_after), ("chain", chain, chain_stale_after)):
            if view.ok:
                continue
            if view.last_success is None:
                why = f"{name} not read successfully since the start {now - self.started_at:.0f}s ago " \
                      f"(limit {limit:.0f}s)"
            else:
                why = f"{name} not read successfully for {view.age_s:.0f}s (limit {limit:.0f}s)"
            if view.last_error:
                why += f"; last error: {view.last_error}"
            reasons.append(why)
        ok = not reasons
        return ok, models.Health(status="ok" if ok else "unhealthy", reasons=reasons, dht=dht, chain=chain,
                                 version=self.version)

    def lookup_name(self, name: str) -> list[str]:
        return name_to_peer_candidates(name, self.known_peer_ids())
