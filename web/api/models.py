"""Response models of the dashboard API (they make the OpenAPI schema and serialise the cache).

Times are unix seconds (float); rewards are points (the chain stores points x 1000).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

class ErrorBody(BaseModel):
    detail: str = Field(description="what was wrong with the request and how to fix it")


class SourceHealth(BaseModel):
    configured: bool = Field(description="false when this source is switched off or has nothing to read")
    ok: bool = Field(description="read successfully within its staleness limit (or not configured)")
    last_success: float | None = Field(description="unix time of the last successful poll")
    age_s: float | None = Field(description="seconds since the last successful poll")
    last_error: str | None = Field(description="why the latest failed poll failed")
    consecutive_failures: int


class Health(BaseModel):
    status: Literal["ok", "unhealthy"]
    reasons: list[str] = Field(description="why the service is unhealthy (empty when ok)")
    dht: SourceHealth
    chain: SourceHealth
    version: int = Field(description="increases every time the cache changes")


class RoundAndStage(BaseModel):
    game: Literal["three-stage", "sapo"] = Field(description="the game the swarm plays (from the coordinator's "
                                                 "round record; three-stage until one is read)")
    round: int | None
    stage: int | None = Field(description="the stage, counted from 1 as the swarm does (the contract's stage + 1)")
    stage_name: str | None = Field(description="three-stage: answer, critique or decide; SAPO: rollouts")
    stage_names: list[str] = Field(description="the game's stages in order (stage 1 first)")
    stage_count: int = Field(description="stages per round in this game")
    stage_deadline: float | None = Field(description="unix time the stage ends (from the DHT), when known")
    source: Literal["dht", "chain", "none"] = Field(description="where round/stage came from (DHT first)")
    chain_round: int | None
    chain_stage: int | None = Field(description="the contract's stage in the same 1-based numbering as `stage`")
    updated_at: float | None


class LeaderboardEntry(BaseModel):
    rank: int
    peer_id: str
    name: str
    reward: float = Field(description="points this round (sum of the stages so far)")
    stage_rewards: list[float | None] = Field(description="points per stage, stage 1 first; null when not published")
    is_me: bool


class Leaderboard(BaseModel):
    round: int | None = Field(description="the round ranked: the current one, or the latest with rewards")
    total: int = Field(description="entries matching the query (before paging)")
    offset: int
    limit: int
    query: str | None
    entries: list[LeaderboardEntry]
    updated_at: float | None


class CumulativeEntry(BaseModel):
    rank: int
    peer_id: str
    name: str
    total_rewards: float = Field(description="points recorded on chain, all rounds")
    total_wins: int = Field(description="times voted a round winner on chain")
    is_me: bool


class CumulativeLeaderboard(BaseModel):
    available: bool = Field(description="false when no chain is configured or it was never read")
    reason: str | None
    total: int
    offset: int
    limit: int
    entries: list[CumulativeEntry]
    updated_at: float | None


class RewardPoint(BaseModel):
    round: int
    reward: float


class RewardSeries(BaseModel):
    peer_id: str
    name: str
    is_me: bool
    points: list[RewardPoint]


class RewardsHistory(BaseModel):
    rounds: list[int] = Field(description="rounds in the window, oldest first")
    series: list[RewardSeries] = Field(description="the top peers over the window, plus your node")
    updated_at: float | None


class GossipEntry(BaseModel):
    peer_id: str
    name: str
    round: int
    stage: int = Field(description="the stage (from 1) the record was published in")
    stage_name: str | None = Field(description="that stage's name in the swarm's game")
    kind: str = Field(description="answer, critique, decision (three-stage) or rollouts (SAPO)")
    question: str
    answer: str
    time: float


class Gossip(BaseModel):
    entries: list[GossipEntry] = Field(description="newest first")
    updated_at: float | None


class Evaluation(BaseModel):
    round: int = Field(description="the round after which the node evaluated")
    accuracy: float = Field(description="share of held-out problems answered correctly (0..1)")
    format_rate: float = Field(description="share of completions in the expected format (0..1)")
    problems: int = Field(description="held-out problems evaluated")
    at: float = Field(description="unix time the evaluation finished")


class SapoRound(BaseModel):
    round: int = Field(description="the node's latest SAPO round")
    shared: int = Field(description="rollout groups it published to the swarm")
    taken: int = Field(description="other peers' groups it took after re-scoring them itself")
    trained: int = Field(description="groups in its GRPO step (own + taken)")
    with_signal: int = Field(description="trained groups whose rewards differ (GRPO learns only from those)")
    dropped: int = Field(description="peers' records it has dropped since it started")
    at: float


class Node(BaseModel):
    peer_id: str
    name: str
    last_seen: float
    age_s: float = Field(description="seconds between the last heartbeat and the poll that saw it")
    is_me: bool
    evaluation: Evaluation | None = Field(None, description="the node's latest held-out evaluation, if it runs them")
    sapo: SapoRound | None = Field(None, description="SAPO game: what the node shared, took and trained on")


class Nodes(BaseModel):
    count: int
    nodes: list[Node] = Field(description="most recently seen first")
    updated_at: float | None


class NameToId(BaseModel):
    name: str
    peer_ids: list[str]


class IdToName(BaseModel):
    names: dict[str, str] = Field(description="peer ID -> name")


class Me(BaseModel):
    known: bool = Field(description="false when no local trainer is configured or found")
    reason: str | None = Field(description="why the node is unknown, and how to make it known")
    peer_id: str | None
    name: str | None
    wallet: str | None
    online: bool
    last_seen: float | None
    round_reward: float | None
    rank: int | None
    total_rewards: float | None
    total_wins: int | None
    pending_submissions: int | None
    failed_submissions: int | None
    evaluation: Evaluation | None = Field(None, description="this node's latest held-out evaluation")
    sapo: SapoRound | None = Field(None, description="SAPO game: this node's latest round")
    login_url: str
    updated_at: float | None
