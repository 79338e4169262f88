// "Your node": the trainer on this machine (identity, wallet, standing, pending submissions).
import type { Me } from "../api";
import { ago, percent, points, sapoSummary, shortId, since } from "../format";

export function NodeCard({ me }: { me: Me }) {
  if (!me.known) {
    return (
      <div className="state empty">
        <p>No local trainer known to this dashboard.</p>
        <p className="muted small">{me.reason}</p>
        <p className="small">
          Sign in at <a href={me.login_url}>{me.login_url}</a> and start a trainer to see it here.
        </p>
      </div>
    );
  }
  const rows: [string, React.ReactNode][] = [
    ["Peer ID", <span className="mono" title={me.peer_id ?? ""}>{shortId(me.peer_id ?? "", 8)}</span>],
    ["Wallet", me.wallet ? <span className="mono" title={me.wallet}>{shortId(me.wallet, 6)}</span> : <span className="muted">not registered</span>],
    ["This round", me.round_reward === null ? "–" : `${points(me.round_reward)}${me.rank ? ` (#${me.rank})` : ""}`],
    ["Total rewards", points(me.total_rewards)],
    ["Wins", me.total_wins ?? "–"],
    [
      "Held-out accuracy",
      me.evaluation ? (
        <span title={`format ${percent(me.evaluation.format_rate)}, evaluated ${ago(since(me.evaluation.at))}`}>
          {percent(me.evaluation.accuracy)}
          <span className="muted small">
            {" "}
            of {me.evaluation.problems} after round {me.evaluation.round}
          </span>
        </span>
      ) : (
        <span className="muted">not evaluated yet</span>
      ),
    ],
    ...(me.sapo
      ? ([
          [
            "SAPO round",
            <span data-testid="sapo-stats" title={`${me.sapo.dropped} bad peer record(s) dropped so far`}>
              {sapoSummary(me.sapo)}
              <span className="muted small"> in round {me.sapo.round}</span>
            </span>,
          ],
        ] as [string, React.ReactNode][])
      : []),
    [
      "Pending submissions",
      me.pending_submissions === null ? (
        "–"
      ) : (
        <>
          {me.pending_submissions}
          {me.failed_submissions ? <span className="warn"> · {me.failed_submissions} failed</span> : null}
        </>
      ),
    ],
  ];
  return (
    <div className="me-card">
      <div className="me-name">
        <span className={`status-dot ${me.online ? "on" : "off"}`} aria-hidden="true" />
        <strong>{me.name}</strong>
        <span className="muted small">
          {me.online ? "online" : me.last_seen ? `last seen ${ago(since(me.last_seen))}` : "not seen in the swarm yet"}
        </span>
      </div>
      <dl>
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
    </div>
  );
}
