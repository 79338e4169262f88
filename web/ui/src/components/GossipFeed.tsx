// Recent answers and critiques (SAPO: shared rollouts) from the swarm, newest first.
import type { Gossip } from "../api";
import { ago, since, stageLabel } from "../format";

export function GossipFeed({ data }: { data: Gossip }) {
  const now = Date.now();
  return (
    <ul className="gossip">
      {data.entries.map((g) => (
        <li key={`${g.peer_id}:${g.round}:${g.stage}:${g.kind}:${g.question}`}>
          <div className="gossip-head">
            <span className="name">{g.name}</span>
            <span className={`kind ${g.kind}`}>{g.kind}</span>
            <span className="muted small">
              r{g.round} · {stageLabel(g.stage, g.stage_name)} · {ago(since(g.time, now))}
            </span>
          </div>
          <p className="question">{g.question}</p>
          <p className="answer">
            <span className="muted">→</span> {g.answer}
          </p>
        </li>
      ))}
    </ul>
  );
}
