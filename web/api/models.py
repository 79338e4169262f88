"""Response models of the dashboard API (they make the OpenAPI schema and serialise the cache).

Times are unix seconds (float); rewards are points (the chain stores points x 1000).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

STAGE_NAMES = ("answer", "critique", "decide")


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
    round: int | None
    stage: int | None
    stage_name: str | None = Field(description="answer, critique or decide")
    stage_count: int
    stage_deadline: float | None = Field(description="unix time the stage ends (from the DHT), when known")
    source: Literal["dht", "chain", "none"] = Field(description="where round/stage came from (DHT first)")
    chain_round: int | None
    chain_stage: int | None
    updated_at: float | None


class LeaderboardEntry(BaseModel):
    rank: int
    peer_id: str
    name: str
    reward: float = Field(description="points this round (sum of the stages so far)")
    stage_rewards: list[float | None] = Field(description="points per stage; null when not published")
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
    stage: int
    kind: str = Field(description="answer, critique or decision")
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


class Node(BaseModel):
    peer_id: str
    name: str
    last_seen: float
    age_s: float = Field(description="seconds between the last heartbeat and the poll that saw it")
    is_me: bool
    evaluation: Evaluation | None = Field(None, description="the node's latest held-out evaluation, if it runs them")


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
    login_url: str
    updated_at: float | None
