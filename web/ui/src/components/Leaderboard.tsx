// Leaderboards: this round (from the DHT) and all time (from the chain), searchable by name or peer ID.
import { useEffect, useState } from "react";
import type { CumulativeLeaderboard, Leaderboard as Board } from "../api";
import { points, shortId } from "../format";
import { useResource } from "../live";
import { Panel } from "./Panel";

const SEARCH_DEBOUNCE_MS = 200;

export function useDebounced<T>(value: T, ms: number): T {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setV(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}

function PeerCell({ name, peerId, me }: { name: string; peerId: string; me: boolean }) {
  return (
    <td className="peer">
      <span className="name">{name}</span>
      {me && <span className="badge">you</span>}
      <span className="pid mono" title={peerId}>
        {shortId(peerId)}
      </span>
    </td>
  );
}

export function Leaderboard({ tick }: { tick: number }) {
  const [tab, setTab] = useState<"round" | "all">("round");
  const [query, setQuery] = useState("");
  const q = useDebounced(query.trim(), SEARCH_DEBOUNCE_MS);
  const roundPath = q ? `/api/leaderboard?limit=500&q=${encodeURIComponent(q)}` : "/api/leaderboard";
  const round = useResource<Board>(tab === "round" ? roundPath : null, tick);
  const all = useResource<CumulativeLeaderboard>(tab === "all" ? "/api/leaderboard-cumulative?limit=500" : null, tick);
  const needle = q.toLowerCase();

  const search = (
    <input
      type="search"
      className="search"
      placeholder="Search name or peer ID"
      aria-label="search the leaderboard by name or peer ID"
      value={query}
      onChange={(e) => setQuery(e.target.value)}
    />
  );
  const tabs = (
    <div className="tabs" role="tablist">
      <button role="tab" aria-selected={tab === "round"} onClick={() => setTab("round")}>
        This round
      </button>
      <button role="tab" aria-selected={tab === "all"} onClick={() => setTab("all")}>
        All time
      </button>
    </div>
  );
  const head = (
    <div className="board-tools">
      {tabs}
      {search}
    </div>
  );

  if (tab === "round") {
    return (
      <Panel
        title="Leaderboard"
        id="leaderboard"
        res={round}
        aside={head}
        isEmpty={(d) => d.entries.length === 0}
        empty={q ? <>No peer matches “{q}”.</> : <>No peers yet: the board fills as peers join and publish rewards.</>}
      >
        {(d) => (
          <>
            <p className="muted small">
              Round {d.round ?? "–"} · {d.total} peer{d.total === 1 ? "" : "s"}
              {q && " matching"}
            </p>
            <table className="board">
              <thead>
                <tr>
                  <th scope="col">#</th>
                  <th scope="col">Peer</th>
                  <th scope="col" className="num">
                    Reward
                  </th>
                </tr>
              </thead>
              <tbody>
                {d.entries.map((e) => (
                  <tr key={e.peer_id} className={e.is_me ? "me" : undefined}>
                    <td className="rank">{e.rank}</td>
                    <PeerCell name={e.name} peerId={e.peer_id} me={e.is_me} />
                    <td className="num" title={e.stage_rewards.map((v) => points(v)).join(" / ")}>
                      {points(e.reward)}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </>
        )}
      </Panel>
    );
  }
  return (
    <Panel
      title="Leaderboard"
      id="leaderboard"
      res={all}
      aside={head}
      isEmpty={(d) => !d.available || d.entries.filter((e) => match(e.name, e.peer_id, needle)).length === 0}
      empty={
        all.data && !all.data.available ? (
          <>All-time totals come from the chain: {all.data.reason}</>
        ) : q ? (
          <>No peer matches “{q}”.</>
        ) : (
          <>No rewards recorded on chain yet.</>
        )
      }
    >
      {(d) => (
        <table className="board">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">Peer</th>
              <th scope="col" className="num">
                Rewards
              </th>
              <th scope="col" className="num">
                Wins
              </th>
            </tr>
          </thead>
          <tbody>
            {d.entries
              .filter((e) => match(e.name, e.peer_id, needle))
              .map((e) => (
                <tr key={e.peer_id} className={e.is_me ? "me" : undefined}>
                  <td className="rank">{e.rank}</td>
                  <PeerCell name={e.name} peerId={e.peer_id} me={e.is_me} />
                  <td className="num">{points(e.total_rewards)}</td>
                  <td className="num">{e.total_wins}</td>
                </tr>
              ))}
          </tbody>
        </table>
      )}
    </Panel>
  );
}

function match(name: string, peerId: string, needle: string): boolean {
  return !needle || name.includes(needle) || peerId.toLowerCase().includes(needle);
}
