// Small display helpers shared by the components.

export function points(value: number | null | undefined, digits = 2): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return "–";
  return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** "12s ago", "3m ago", "2h ago" from a difference in seconds. */
export function ago(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** Seconds between a unix time and now (the browser clock). */
export function since(unix: number, nowMs: number = Date.now()): number {
  return nowMs / 1000 - unix;
}

/** A 0..1 share as a percentage ("42%", "7.5%"); "–" when unknown. */
export function percent(share: number | null | undefined): string {
  if (share === null || share === undefined || !Number.isFinite(share)) return "–";
  const pct = share * 100;
  return `${pct.toLocaleString("en-US", { maximumFractionDigits: pct < 10 && pct > 0 ? 1 : 0 })}%`;
}

export function shortId(id: string, keep = 6): string {
  return id.length <= keep * 2 + 1 ? id : `${id.slice(0, keep)}…${id.slice(-keep)}`;
}

/** A stage's label: its name when the API gave one, else "stage N" (stages count from 1). */
export function stageLabel(stage: number | null, name?: string | null): string {
  if (stage === null) return "–";
  return name ?? `stage ${stage}`;
}

export const GAME_LABELS: Record<string, string> = {
  "three-stage": "three-stage game",
  sapo: "SAPO · one stage a round",
};

/** "shared 4 · took 3 · trained 7 (2 with signal)" for a SAPO node. */
export function sapoSummary(s: { shared: number; taken: number; trained: number; with_signal: number }): string {
  return `shared ${s.shared} · took ${s.taken} · trained ${s.trained} (${s.with_signal} with signal)`;
}

export function countdown(deadline: number | null, nowMs: number = Date.now()): string | null {
  if (deadline === null) return null;
  const left = Math.round(deadline - nowMs / 1000);
  if (left <= 0) return "ending";
  const m = Math.floor(left / 60);
  const s = left % 60;
  return m > 0 ? `${m}m ${String(s).padStart(2, "0")}s left` : `${s}s left`;
}
