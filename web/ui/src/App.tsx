// The dashboard page: every section fetches its own endpoint and refreshes on live updates.
import type { Gossip, Health, Me, Nodes, RewardsHistory, RoundAndStage } from "./api";
import { GossipFeed } from "./components/GossipFeed";
import { Leaderboard } from "./components/Leaderboard";
import { NodeCard } from "./components/NodeCard";
import { Panel } from "./components/Panel";
import { RewardsChart } from "./components/RewardsChart";
import { RoundCard } from "./components/RoundCard";
import { ago, percent, sapoSummary, shortId } from "./format";
import { useLiveTick, useResource } from "./live";

const LIVE_TEXT = { connecting: "connecting…", live: "live", polling: "polling" } as const;

export function App() {
  const { tick, status } = useLiveTick();
  const health = useResource<Health>("/api/healthz", tick);
  const round = useResource<RoundAndStage>("/api/round_and_stage", tick);
  const history = useResource<RewardsHistory>("/api/rewards-history", tick);
  const gossip = useResource<Gossip>("/api/gossip", tick);
  const nodes = useResource<Nodes>("/api/nodes", tick);
  const me = useResource<Me>("/api/me", tick);

  return (
    <div className="app">
      <header className="top">
        <h1>
          <img src="/favicon.svg" alt="" width={24} height={24} /> RL Swarm
        </h1>
        <div className="top-stats">
          <span className="stat" data-testid="node-count">
            <strong>{nodes.data ? nodes.data.count : "–"}</strong> node{nodes.data?.count === 1 ? "" : "s"}
          </span>
          <span className={`live ${status}`} title="how this page gets updates">
            <span className="status-dot" aria-hidden="true" /> {LIVE_TEXT[status]}
          </span>
        </div>
      </header>

      {health.data?.status === "unhealthy" && (
        <div className="banner" role="alert">
          <strong>Data may be out of date.</strong> {health.data.reasons.join(" · ")}
        </div>
      )}
      {health.data === null && health.error && (
        <div className="banner" role="alert">
          <strong>The dashboard API is not answering.</strong> {health.error}
        </div>
      )}

      <main className="grid">
        <Panel title="Round" id="round" res={round}>
          {(d) => <RoundCard data={d} />}
        </Panel>

        <Panel title="Your node" id="me" res={me}>
          {(d) => <NodeCard me={d} />}
        </Panel>

        <Panel
          title="Rewards over rounds"
          id="rewards"
          res={history}
          isEmpty={(d) => d.series.every((s) => s.points.length === 0)}
          empty={<>No rewards published yet: the chart appears after the first stage of a round is scored.</>}
        >
          {(d) => <RewardsChart data={d} />}
        </Panel>

        <Leaderboard tick={tick} />

        <Panel
          title="Gossip"
          id="gossip"
          res={gossip}
          isEmpty={(d) => d.entries.length === 0}
          empty={<>Quiet so far: answers and critiques (SAPO: rollouts) show up here as peers publish them.</>}
        >
          {(d) => <GossipFeed data={d} />}
        </Panel>

        <Panel
          title="Nodes"
          id="nodes"
          res={nodes}
          isEmpty={(d) => d.count === 0}
          empty={<>No peers seen on the DHT yet.</>}
        >
          {(d) => (
            <ul className="nodes">
              {d.nodes.slice(0, 50).map((n) => (
                <li key={n.peer_id} className={n.is_me ? "me" : undefined}>
                  <div className="node-line">
                    <span className="name">{n.name}</span>
                    {n.is_me && <span className="badge">you</span>}
                    {n.evaluation && (
                      <span
                        className="badge eval"
                        title={`held-out accuracy after round ${n.evaluation.round} (${n.evaluation.problems} problems)`}
                      >
                        {percent(n.evaluation.accuracy)}
                      </span>
                    )}
                    {n.sapo && (
                      <span className="badge sapo" title={`round ${n.sapo.round}: ${sapoSummary(n.sapo)}`}>
                        took {n.sapo.taken}
                      </span>
                    )}
                    <span className="muted small seen">{ago(n.age_s)}</span>
                  </div>
                  <span className="mono muted small" title={n.peer_id}>
                    {shortId(n.peer_id, 8)}
                  </span>
                </li>
              ))}
              {d.count > 50 && <li className="muted small">… and {d.count - 50} more</li>}
            </ul>
          )}
        </Panel>
      </main>
      <footer className="muted small">
        Data from the swarm's DHT and the SwarmCoordinator contract · <a href="/docs">API</a>
      </footer>
    </div>
  );
}
