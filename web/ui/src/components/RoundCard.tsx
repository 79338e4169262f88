// Current round and stage, with a three-step progress indicator and the stage countdown.
import { useEffect, useState } from "react";
import type { RoundAndStage } from "../api";
import { countdown, STAGES } from "../format";

export function StageProgress({ stage, count }: { stage: number | null; count: number }) {
  const steps = Array.from({ length: Math.max(count, STAGES.length) }, (_, i) => STAGES[i] ?? `stage ${i}`);
  return (
    <ol className="stages" aria-label="stage progress">
      {steps.map((name, i) => {
        const state = stage === null ? "todo" : i < stage ? "done" : i === stage ? "now" : "todo";
        return (
          <li key={name} className={`step ${state}`} aria-current={state === "now" ? "step" : undefined}>
            <span className="dot" aria-hidden="true">
              {state === "done" ? "✓" : i + 1}
            </span>
            <span className="label">{name}</span>
          </li>
        );
      })}
    </ol>
  );
}

export function RoundCard({ data }: { data: RoundAndStage }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (data.stage_deadline === null) return;
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, [data.stage_deadline]);
  if (data.round === null) {
    return <div className="state empty">Waiting for the first round: no coordinator has announced one yet.</div>;
  }
  const left = countdown(data.stage_deadline, now);
  const mismatch =
    data.source === "dht" && data.chain_round !== null && (data.chain_round !== data.round || data.chain_stage !== data.stage);
  return (
    <div className="round">
      <div className="round-number">
        <span className="muted">Round</span>
        <strong data-testid="round-number">{data.round}</strong>
      </div>
      <StageProgress stage={data.stage} count={data.stage_count} />
      <p className="muted small">
        Stage <strong>{data.stage_name ?? data.stage}</strong>
        {left && <> · {left}</>} · from the {data.source === "dht" ? "swarm" : "chain"}
        {mismatch && (
          <>
            {" "}
            · chain says round {data.chain_round}, stage {data.chain_stage}
          </>
        )}
      </p>
    </div>
  );
}
