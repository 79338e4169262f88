import { render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { App } from "./App";
import { board, fakeFetch, gossip, history, me, nodes, round } from "./test/fixtures";

afterEach(() => vi.unstubAllGlobals());

describe("App", () => {
  it("renders every section from the API", async () => {
    vi.stubGlobal(
      "fetch",
      fakeFetch({
        "/api/healthz": { status: "ok", reasons: [] },
        "/api/round_and_stage": round,
        "/api/rewards-history": history,
        "/api/gossip": gossip,
        "/api/nodes": nodes,
        "/api/me": me,
        "/api/leaderboard": board,
      }),
    );
    const { container } = render(<App />);
    expect((await screen.findByTestId("round-number")).textContent).toBe("7");
    expect((await screen.findByTestId("node-count")).textContent).toMatch(/2\s*nodes/);
    expect(await screen.findByText("What is 2+3?")).toBeTruthy();
    expect(container.querySelectorAll("circle.point").length).toBe(5);
    expect((await screen.findByTitle(/held-out accuracy after round 4/)).textContent).toBe("38%");
    expect(screen.queryByRole("alert")).toBeNull();
  });
  it("shows error states and a banner, never a blank page, when the API is down", async () => {
    vi.stubGlobal("fetch", fakeFetch({ "/api/healthz": new Error("down") }));
    render(<App />);
    expect(await screen.findByText(/dashboard API is not answering/)).toBeTruthy();
    const alerts = await screen.findAllByText(/Could not load/);
    expect(alerts.length).toBeGreaterThanOrEqual(5);
  });
  it("shows why data is stale when the API reports unhealthy", async () => {
    vi.stubGlobal(
      "fetch",
      fakeFetch({ "/api/healthz": { status: "unhealthy", reasons: ["DHT not read successfully for 90s"] } }),
    );
    render(<App />);
    expect(await screen.findByText(/DHT not read successfully for 90s/)).toBeTruthy();
  });
});
