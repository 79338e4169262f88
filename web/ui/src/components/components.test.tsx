import { act, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { board, fakeFetch, gossip, history, me, round } from "../test/fixtures";
import { GossipFeed } from "./GossipFeed";
import { Leaderboard } from "./Leaderboard";
import { NodeCard } from "./NodeCard";
import { Panel } from "./Panel";
import { RewardsChart } from "./RewardsChart";
import { RoundCard } from "./RoundCard";

afterEach(() => vi.unstubAllGlobals());

describe("RoundCard", () => {
  it("shows the round and marks finished, current and next stages", () => {
    const { container } = render(<RoundCard data={round} />);
    expect(screen.getByTestId("round-number").textContent).toBe("7");
    const steps = [...container.querySelectorAll(".step")].map((li) => li.className);
    expect(steps).toEqual(["step done", "step now", "step todo"]);
    expect(container.querySelector('[aria-current="step"]')?.textContent).toContain("critique");
  });
  it("has a waiting state before the first round", () => {
    render(<RoundCard data={{ ...round, round: null, stage: null, source: "none" }} />);
    expect(screen.getByText(/Waiting for the first round/)).toBeTruthy();
  });
  it("says when the chain disagrees with the swarm", () => {
    render(<RoundCard data={{ ...round, chain_round: 6, chain_stage: 2 }} />);
    expect(screen.getByText(/chain says round 6, stage 2 \(critique\)/)).toBeTruthy();
  });
  it("agrees with the chain when both name the same stage", () => {
    render(<RoundCard data={round} />);
    expect(screen.queryByText(/chain says/)).toBeNull();
    expect(screen.getByTestId("stage-name").textContent).toBe("critique");
    expect(screen.getByTestId("game").textContent).toBe("three-stage game");
  });
  it("shows a SAPO round as its one stage", () => {
    const sapo = { ...round, game: "sapo" as const, stage: 1, stage_name: "rollouts", stage_names: ["rollouts"],
      stage_count: 1, chain_stage: 1 };
    const { container } = render(<RoundCard data={sapo} />);
    expect([...container.querySelectorAll(".step")].map((li) => li.textContent)).toEqual(["1rollouts"]);
    expect(container.querySelector('[aria-current="step"]')?.textContent).toContain("rollouts");
    expect(screen.getByTestId("game").textContent).toMatch(/SAPO/);
    expect(screen.queryByText(/chain says/)).toBeNull();
  });
});

describe("RewardsChart", () => {
  it("draws one point per reward and draws your node last, highlighted", () => {
    const { container } = render(<RewardsChart data={history} />);
    expect(container.querySelectorAll("circle.point")).toHaveLength(5);
    const groups = container.querySelectorAll("g.series");
    expect(groups[groups.length - 1].classList.contains("me")).toBe(true);
    expect(groups[groups.length - 1].getAttribute("data-peer")).toBe("calm-jade-heron");
    expect(container.querySelector("li.me")?.textContent).toContain("you");
  });
  it("handles a single round (no line, centred point)", () => {
    const one = { ...history, rounds: [3], series: [{ ...history.series[0], points: [{ round: 3, reward: 1 }] }] };
    const { container } = render(<RewardsChart data={one} />);
    expect(container.querySelectorAll("circle.point")).toHaveLength(1);
    expect(container.querySelectorAll("path")).toHaveLength(0);
  });
});

describe("Panel states", () => {
  const child = (d: number[]) => <p>items {d.length}</p>;
  it("shows loading, then error, then empty, then data", () => {
    const { rerender } = render(<Panel title="Things" id="t" res={{ data: null, error: null, loading: true }}>{child}</Panel>);
    expect(screen.getByRole("status").textContent).toMatch(/Loading things/);
    rerender(<Panel title="Things" id="t" res={{ data: null, error: "boom", loading: false }}>{child}</Panel>);
    expect(screen.getByRole("alert").textContent).toMatch(/Could not load things.*boom/);
    rerender(
      <Panel title="Things" id="t" res={{ data: [], error: null, loading: false }} isEmpty={(d) => d.length === 0} empty="Nothing yet">
        {child}
      </Panel>,
    );
    expect(screen.getByText("Nothing yet")).toBeTruthy();
    rerender(<Panel title="Things" id="t" res={{ data: [1, 2], error: "late", loading: false }}>{child}</Panel>);
    expect(screen.getByText("items 2")).toBeTruthy();
    expect(screen.getByText(/last data received: late/)).toBeTruthy();
  });
});

describe("NodeCard", () => {
  it("explains how to get a node when none is known", () => {
    render(<NodeCard me={{ ...me, known: false, reason: "no swarm.pem here", peer_id: null, name: null }} />);
    expect(screen.getByText("no swarm.pem here")).toBeTruthy();
    expect(screen.getByRole("link").getAttribute("href")).toBe("http://127.0.0.1:3000");
  });
  it("shows name, rewards, wins and pending submissions", () => {
    render(<NodeCard me={me} />);
    expect(screen.getByText("calm-jade-heron")).toBeTruthy();
    expect(screen.getByText("10.5")).toBeTruthy();
    expect(screen.getByText("1.25 (#2)")).toBeTruthy();
    expect(screen.getByText(/1 failed/)).toBeTruthy();
  });
  it("shows the latest held-out accuracy, or says there is none yet", () => {
    const { rerender } = render(<NodeCard me={me} />);
    expect(screen.getByText("25%")).toBeTruthy();
    expect(screen.getByText(/of 32 after round 9/)).toBeTruthy();
    rerender(<NodeCard me={{ ...me, evaluation: null }} />);
    expect(screen.getByText("not evaluated yet")).toBeTruthy();
  });
  it("shows what a SAPO node shared, took and trained on, and nothing for the three-stage game", () => {
    const sapo = { round: 12, shared: 4, taken: 3, trained: 7, with_signal: 2, dropped: 1, at: 1_700_000_000 };
    const { rerender } = render(<NodeCard me={{ ...me, sapo }} />);
    expect(screen.getByTestId("sapo-stats").textContent).toBe("shared 4 · took 3 · trained 7 (2 with signal) in round 12");
    rerender(<NodeCard me={me} />);
    expect(screen.queryByTestId("sapo-stats")).toBeNull();
  });
});

describe("GossipFeed", () => {
  it("lists who said what", () => {
    render(<GossipFeed data={gossip} />);
    expect(screen.getByText("quick-amber-otter")).toBeTruthy();
    expect(screen.getByText("What is 2+3?")).toBeTruthy();
    expect(screen.getByText(/r7 · answer/)).toBeTruthy();
  });
});

describe("Leaderboard", () => {
  it("searches on the server by name and shows only the match", async () => {
    const calls: string[] = [];
    vi.stubGlobal(
      "fetch",
      fakeFetch(
        {
          "/api/leaderboard": (u: URL) => {
            const q = u.searchParams.get("q");
            const entries = q ? board.entries.filter((e) => e.name.includes(q)) : board.entries;
            return { ...board, total: entries.length, entries, query: q };
          },
        },
        calls,
      ),
    );
    render(<Leaderboard tick={0} />);
    await screen.findByText("quick-amber-otter");
    expect(screen.getByText("calm-jade-heron")).toBeTruthy();
    fireEvent.change(screen.getByRole("searchbox"), { target: { value: "jade" } });
    await waitFor(() => expect(screen.queryByText("quick-amber-otter")).toBeNull());
    expect(screen.getByText("calm-jade-heron")).toBeTruthy();
    expect(calls).toContain("/api/leaderboard?limit=500&q=jade");
  });
  it("shows the chain's reason when all-time totals are unavailable", async () => {
    vi.stubGlobal(
      "fetch",
      fakeFetch({
        "/api/leaderboard": board,
        "/api/leaderboard-cumulative": { available: false, reason: "no chain configured", total: 0, entries: [], updated_at: null },
      }),
    );
    render(<Leaderboard tick={0} />);
    await screen.findByText("quick-amber-otter");
    await act(async () => {
      fireEvent.click(screen.getByRole("tab", { name: "All time" }));
    });
    expect(await screen.findByText(/no chain configured/)).toBeTruthy();
  });
});
