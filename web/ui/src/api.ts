// Types of the dashboard API (mirrors web/api/models.py) and the small fetch helpers.

export interface RoundAndStage {
  game: "three-stage" | "sapo";
  round: number | null;
  /** Counted from 1, as the swarm does (the contract's stage + 1). */
  stage: number | null;
  stage_name: string | null;
  /** The game's stages in order, stage 1 first. */
  stage_names: string[];
  stage_count: number;
  stage_deadline: number | null;
  source: "dht" | "chain" | "none";
  chain_round: number | null;
  chain_stage: number | null;
  updated_at: number | null;
}

export interface LeaderboardEntry {
  rank: number;
  peer_id: string;
  name: string;
  reward: number;
  stage_rewards: (number | null)[];
  is_me: boolean;
}

export interface Leaderboard {
  round: number | null;
  total: number;
  offset: number;
  limit: number;
  query: string | null;
  entries: LeaderboardEntry[];
  updated_at: number | null;
}

export interface CumulativeEntry {
  rank: number;
  peer_id: string;
  name: string;
  total_rewards: number;
  total_wins: number;
  is_me: boolean;
}

export interface CumulativeLeaderboard {
  available: boolean;
  reason: string | null;
  total: number;
  entries: CumulativeEntry[];
  updated_at: number | null;
}

export interface RewardSeries {
  peer_id: string;
  name: string;
  is_me: boolean;
  points: { round: number; reward: number }[];
}

export interface RewardsHistory {
  rounds: number[];
  series: RewardSeries[];
  updated_at: number | null;
}

export interface GossipEntry {
  peer_id: string;
  name: string;
  round: number;
  stage: number;
  stage_name: string | null;
  kind: string;
  question: string;
  answer: string;
  time: number;
}

export interface Gossip {
  entries: GossipEntry[];
  updated_at: number | null;
}

export interface Evaluation {
  round: number;
  accuracy: number;
  format_rate: number;
  problems: number;
  at: number;
}

/** SAPO game: what a node shared, took from peers and trained on in its latest round. */
export interface SapoRound {
  round: number;
  shared: number;
  taken: number;
  trained: number;
  with_signal: number;
  dropped: number;
  at: number;
}

export interface NodeInfo {
  peer_id: string;
  name: string;
  last_seen: number;
  age_s: number;
  is_me: boolean;
  evaluation?: Evaluation | null;
  sapo?: SapoRound | null;
}

export interface Nodes {
  count: number;
  nodes: NodeInfo[];
  updated_at: number | null;
}

export interface Me {
  known: boolean;
  reason: string | null;
  peer_id: string | null;
  name: string | null;
  wallet: string | null;
  online: boolean;
  last_seen: number | null;
  round_reward: number | null;
  rank: number | null;
  total_rewards: number | null;
  total_wins: number | null;
  pending_submissions: number | null;
  failed_submissions: number | null;
  evaluation?: Evaluation | null;
  sapo?: SapoRound | null;
  login_url: string;
  updated_at: number | null;
}

export interface Health {
  status: "ok" | "unhealthy";
  reasons: string[];
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** GET a JSON endpoint; a non-2xx answer becomes an ApiError carrying the API's `detail`. */
export async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, { signal, headers: { Accept: "application/json" } });
  } catch (err) {
    if ((err as Error).name === "AbortError") throw err;
    throw new ApiError("cannot reach the dashboard API (is `rl-swarm dashboard` running?)", 0);
  }
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  // /api/healthz answers 503 with a normal body: callers want that body, not an error.
  if (!res.ok && !(res.status === 503 && body && typeof body === "object" && "status" in body)) {
    const detail = body && typeof body === "object" && "detail" in body ? String((body as { detail: unknown }).detail) : res.statusText;
    throw new ApiError(`${path}: ${res.status} ${detail}`, res.status);
  }
  return body as T;
}
