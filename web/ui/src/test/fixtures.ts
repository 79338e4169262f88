// Sample API bodies (shapes of web/api/models.py) and a fetch stand-in for component tests.
import type { Gossip, Leaderboard, Me, Nodes, RewardsHistory, RoundAndStage } from "../api";

export const ME_ID = "QmMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMeMe";
export const OTHER_ID = "QmOtherOtherOtherOtherOtherOtherOtherOther1234";

export const round: RoundAndStage = {
  game: "three-stage", round: 7, stage: 2, stage_name: "critique", stage_names: ["answer", "critique", "decide"],
  stage_count: 3, stage_deadline: null, source: "dht", chain_round: 7, chain_stage: 2, updated_at: 1_700_000_000,
};

export const board: Leaderboard = {
  round: 7, total: 2, offset: 0, limit: 100, query: null, updated_at: 1_700_000_000,
  entries: [
    { rank: 1, peer_id: OTHER_ID, name: "quick-amber-otter", reward: 2.5, stage_rewards: [1.5, 1, null], is_me: false },
    { rank: 2, peer_id: ME_ID, name: "calm-jade-heron", reward: 1.25, stage_rewards: [1.25, null, null], is_me: true },
  ],
};

export const history: RewardsHistory = {
  rounds: [5, 6, 7], updated_at: 1_700_000_000,
  series: [
    { peer_id: OTHER_ID, name: "quick-amber-otter", is_me: false, points: [{ round: 5, reward: 1 }, { round: 6, reward: 2 }, { round: 7, reward: 2.5 }] },
    { peer_id: ME_ID, name: "calm-jade-heron", is_me: true, points: [{ round: 6, reward: 0.5 }, { round: 7, reward: 1.25 }] },
  ],
};

export const gossip: Gossip = {
  updated_at: 1_700_000_000,
  entries: [{ peer_id: OTHER_ID, name: "quick-amber-otter", round: 7, stage: 1, stage_name: "answer", kind: "answer", question: "What is 2+3?", answer: "5", time: 1_700_000_000 }],
};

export const nodes: Nodes = {
  count: 2, updated_at: 1_700_000_000,
  nodes: [
    {
      peer_id: OTHER_ID, name: "quick-amber-otter", last_seen: 1_700_000_000, age_s: 3, is_me: false,
      evaluation: { round: 4, accuracy: 0.375, format_rate: 0.9, problems: 16, at: 1_700_000_000 },
    },
    { peer_id: ME_ID, name: "calm-jade-heron", last_seen: 1_700_000_000, age_s: 5, is_me: true },
  ],
};

export const me: Me = {
  known: true, reason: null, peer_id: ME_ID, name: "calm-jade-heron", wallet: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
  online: true, last_seen: 1_700_000_000, round_reward: 1.25, rank: 2, total_rewards: 10.5, total_wins: 3,
  pending_submissions: 4, failed_submissions: 1, login_url: "http://127.0.0.1:3000", updated_at: 1_700_000_000,
  evaluation: { round: 9, accuracy: 0.25, format_rate: 0.75, problems: 32, at: 1_700_000_000 },
};

export type Routes = Record<string, unknown | ((url: URL) => unknown)>;

/** A `fetch` answering from `routes` (by pathname); unknown paths get a 404 like the API's. */
export function fakeFetch(routes: Routes, calls: string[] = []): typeof fetch {
  return (async (input: RequestInfo | URL) => {
    const url = new URL(String(input), "http://dashboard.test");
    calls.push(url.pathname + url.search);
    const route = routes[url.pathname];
    if (route === undefined) {
      return new Response(JSON.stringify({ detail: `no API endpoint ${url.pathname}` }), { status: 404 });
    }
    const body = typeof route === "function" ? (route as (u: URL) => unknown)(url) : route;
    if (body instanceof Error) throw new TypeError("Failed to fetch");
    return new Response(JSON.stringify(body), { status: 200, headers: { "content-type": "application/json" } });
  }) as typeof fetch;
}
