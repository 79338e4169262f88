import { describe, expect, it } from "vitest";
import { ago, countdown, percent, points, shortId, stageLabel } from "./format";
import { niceTicks } from "./components/RewardsChart";

describe("format", () => {
  it("formats points with at most two decimals and a dash for missing", () => {
    expect(points(1.23456)).toBe("1.23");
    expect(points(1200)).toBe("1,200");
    expect(points(null)).toBe("–");
    expect(points(Number.NaN)).toBe("–");
  });
  it("shows shares as percentages", () => {
    expect(percent(0.375)).toBe("38%");
    expect(percent(0.075)).toBe("7.5%");
    expect(percent(0)).toBe("0%");
    expect(percent(1)).toBe("100%");
    expect(percent(null)).toBe("–");
  });
  it("says how long ago in the largest whole unit", () => {
    expect(ago(4.4)).toBe("4s ago");
    expect(ago(125)).toBe("2m ago");
    expect(ago(7300)).toBe("2h ago");
    expect(ago(-3)).toBe("0s ago");
  });
  it("counts down to a deadline", () => {
    expect(countdown(null)).toBeNull();
    expect(countdown(1000, 1000 * 1000 - 65_000)).toBe("1m 05s left");
    expect(countdown(1000, 1000 * 1000 - 9_000)).toBe("9s left");
    expect(countdown(1000, 1000 * 1000 + 1)).toBe("ending");
  });
  it("shortens long IDs and names stages", () => {
    expect(shortId("QmAAAAAAAAAAAAAAAAAAAAAAAAAZZZZZZ", 4)).toBe("QmAA…ZZZZ");
    expect(shortId("short")).toBe("short");
    expect(stageLabel(1, "answer")).toBe("answer");
    expect(stageLabel(3, "decide")).toBe("decide");
    expect(stageLabel(5)).toBe("stage 5");
    expect(stageLabel(null)).toBe("–");
  });
  it("picks round chart ticks that cover the data", () => {
    const t = niceTicks(0, 2.6);
    expect(t[0]).toBeLessThanOrEqual(0);
    expect(t[t.length - 1]).toBeGreaterThanOrEqual(2.6);
    expect(t).toEqual([0, 1, 2, 3]);
    expect(niceTicks(1, 1)).toEqual([0, 1, 2]);
    // The top tick must reach the data, not stop a step below it.
    expect(niceTicks(0, 8.2)).toEqual([0, 2.5, 5, 7.5, 10]);
    expect(niceTicks(-1.2, 3)).toEqual([-2, 0, 2, 4]);
  });
});
