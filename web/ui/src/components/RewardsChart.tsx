// Rewards per round as a hand-drawn SVG line chart (no chart library: a few KB, no canvas).
// Your own node is drawn last, thick and in the accent colour; other peers are muted.
import { useEffect, useMemo, useRef, useState } from "react";
import type { RewardsHistory, RewardSeries } from "../api";
import { points as fmt } from "../format";

const DEFAULT_W = 640;
const H = 240;
const PAD = { left: 44, right: 12, top: 12, bottom: 28 };
const PALETTE = ["#60a5fa", "#f59e0b", "#a78bfa", "#34d399", "#f472b6", "#94a3b8", "#fb7185", "#22d3ee", "#facc15", "#c084fc"];

/** Round tick values ("nice" steps) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 4): number[] {
  if (!(hi > lo)) {
    const v = Number.isFinite(lo) ? lo : 0;
    return [v - 1, v, v + 1];
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const start = Math.floor(lo / step) * step;
  const out: number[] = [];
  // Up to the first tick at or above `hi`, so the top line is never below the data.
  for (let i = 0; i < 100; i++) {
    const v = Number((start + i * step).toFixed(10));
    out.push(v);
    if (v >= hi - 1e-9) break;
  }
  return out;
}

export function RewardsChart({ data }: { data: RewardsHistory }) {
  const [hover, setHover] = useState<string | null>(null);
  // Drawn at the box's real pixel width so text and dots keep their size on a phone.
  const box = useRef<HTMLElement>(null);
  const [W, setW] = useState(DEFAULT_W);
  useEffect(() => {
    const el = box.current;
    if (!el || typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(([entry]) => {
      const w = Math.round(entry.contentRect.width);
      if (w > 0) setW(w);
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  const { series, x, y, yTicks, xTicks } = useMemo(() => {
    const ordered: RewardSeries[] = [...data.series.filter((s) => !s.is_me), ...data.series.filter((s) => s.is_me)];
    const rounds = data.rounds.length ? data.rounds : [0];
    const r0 = Math.min(...rounds);
    const r1 = Math.max(...rounds);
    const values = ordered.flatMap((s) => s.points.map((p) => p.reward));
    const ticks = niceTicks(Math.min(0, ...values), Math.max(0, ...values));
    const lo = ticks[0];
    const hi = ticks[ticks.length - 1];
    const xf = (r: number) => PAD.left + (r1 === r0 ? 0.5 : (r - r0) / (r1 - r0)) * (W - PAD.left - PAD.right);
    const yf = (v: number) => PAD.top + (1 - (v - lo) / (hi - lo || 1)) * (H - PAD.top - PAD.bottom);
    const everyN = Math.max(1, Math.ceil(rounds.length / 8));
    const everyPx = Math.max(1, Math.ceil((rounds.length * 36) / (W - PAD.left - PAD.right)));
    const step = Math.max(everyN, everyPx);
    return { series: ordered, x: xf, y: yf, yTicks: ticks, xTicks: rounds.filter((_, i) => i % step === 0) };
  }, [data, W]);

  const colour = (s: RewardSeries, i: number) => (s.is_me ? "var(--accent)" : PALETTE[i % PALETTE.length]);
  return (
    <figure className="chart" ref={box}>
      <svg viewBox={`0 0 ${W} ${H}`} width={W} height={H} role="img" aria-label="rewards per round by peer">
        {yTicks.map((t) => (
          <g key={`y${t}`}>
            <line className="grid" x1={PAD.left} x2={W - PAD.right} y1={y(t)} y2={y(t)} />
            <text className="tick" x={PAD.left - 6} y={y(t) + 4} textAnchor="end">
              {fmt(t, 1)}
            </text>
          </g>
        ))}
        {xTicks.map((r) => (
          <text key={`x${r}`} className="tick" x={x(r)} y={H - 8} textAnchor="middle">
            {r}
          </text>
        ))}
        {series.map((s, i) => {
          const dim = hover !== null && hover !== s.peer_id;
          const path = s.points.map((p, j) => `${j ? "L" : "M"}${x(p.round).toFixed(1)},${y(p.reward).toFixed(1)}`).join("");
          return (
            <g key={s.peer_id} className={`series${s.is_me ? " me" : ""}`} opacity={dim ? 0.25 : 1} data-peer={s.name}>
              {s.points.length > 1 && <path d={path} fill="none" stroke={colour(s, i)} strokeWidth={s.is_me ? 3 : 1.5} />}
              {s.points.map((p) => (
                <circle
                  key={p.round}
                  className="point"
                  cx={x(p.round)}
                  cy={y(p.reward)}
                  r={s.is_me ? 4 : 2.8}
                  fill={colour(s, i)}
                >
                  <title>{`${s.name}: ${fmt(p.reward)} in round ${p.round}`}</title>
                </circle>
              ))}
            </g>
          );
        })}
      </svg>
      <figcaption>
        <ul className="legend">
          {[...series].reverse().map((s) => (
            <li
              key={s.peer_id}
              className={s.is_me ? "me" : undefined}
              onMouseEnter={() => setHover(s.peer_id)}
              onMouseLeave={() => setHover(null)}
            >
              <span className="swatch" style={{ background: colour(s, series.indexOf(s)) }} aria-hidden="true" />
              {s.name}
              {s.is_me && <span className="badge">you</span>}
            </li>
          ))}
        </ul>
      </figcaption>
    </figure>
  );
}
