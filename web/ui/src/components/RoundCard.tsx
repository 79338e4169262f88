// Current round and stage, with a progress indicator over the game's stages and the stage countdown.
import { useEffect, useState } from "react";
import type { RoundAndStage } from "../api";
import { countdown, GAME_LABELS } from "../format";

/** `stage` counts from 1, as the API does; `names` are the game's stages, stage 1 first. */
export function StageProgress({ stage, names }: { stage: number | null; names: string[] }) {
  return (
    <ol className="stages" aria-label="stage progress">
      {names.map((name, i) => {
        const n = i + 1;
        const state = stage === null ? "todo" : n < stage ? "done" : n === stage ? "now" : "todo";
        return (
          <li key={name} className={`step ${state}`} aria-current={state === "now" ? "step" : undefined}>
            <span className="dot" aria-hidden="true">
              {state === "done" ? "✓" : n}
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
        <span className="badge game" data-testid="game">
          {GAME_LABELS[data.game] ?? data.game}
        </span>
      </div>
      <StageProgress stage={data.stage} names={data.stage_names} />
      <p className="muted small">
        Stage <strong data-testid="stage-name">{data.stage_name ?? data.stage}</strong>
        {left && <> · {left}</>} · from the {data.source === "dht" ? "swarm" : "chain"}
        {mismatch && (
          <>
            {" "}
            · chain says round {data.chain_round}, stage {data.chain_stage}
            {data.chain_stage !== null && data.stage_names[data.chain_stage - 1]
              ? ` (${data.stage_names[data.chain_stage - 1]})`
              : ""}
          </>
        )}
      </p>
    </div>
  );
}
