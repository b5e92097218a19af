import test from "node:test";
import assert from "node:assert/strict";
import { agentColor, formatCountdown, formatDuration, formatTokens, formatUsd, initialOf, levelsOf, sparklinePoints, statusLabel } from "../../static/js/format.js";

test("money has fixed decimals, tokens have separators", () => {
  assert.equal(formatUsd(0.0142), "$0.0142");
  assert.equal(formatUsd(0), "$0.0000");
  assert.equal(formatUsd(1.5), "$1.5000");
  assert.equal(formatUsd(0.00001234, 6), "$0.000012");
  assert.equal(formatUsd(null), "$0.0000");
  assert.equal(formatTokens(3210), "3,210");
  assert.equal(formatTokens(undefined), "0");
});

test("durations and countdowns", () => {
  assert.equal(formatDuration(42_000), "42s");
  assert.equal(formatDuration(192_000), "3m12s");
  assert.equal(formatDuration(3_840_000), "1h04m");
  assert.equal(formatDuration(-5), "0s");
  assert.equal(formatCountdown(272_000), "4:32");
  assert.equal(formatCountdown(-1), "0:00");
});

test("agent colours are stable and initials are upper-case", () => {
  assert.equal(agentColor("analyst"), agentColor("analyst"));
  assert.match(agentColor("analyst"), /^#[0-9a-f]{6}$/);
  assert.equal(initialOf("moderator"), "M");
  assert.equal(initialOf(""), "?");
  assert.equal(statusLabel("waiting_review"), "waiting for review");
});

test("levelsOf groups nodes by depth; parallel branches share a level", () => {
  const nodes = [
    { id: "brief", depends_on: [] },
    { id: "research", depends_on: ["brief"] },
    { id: "market", depends_on: ["research"] },
    { id: "tech", depends_on: ["research"] },
    { id: "risk", depends_on: ["research"] },
    { id: "review", depends_on: ["market", "tech", "risk"] },
    { id: "summary", depends_on: ["review"] },
  ];
  assert.deepEqual(levelsOf(nodes).map((l) => l.map((n) => n.id)), [["brief"], ["research"], ["market", "tech", "risk"], ["review"], ["summary"]]);
  assert.deepEqual(levelsOf([{ id: "a", depends_on: ["b"] }, { id: "b", depends_on: ["a"] }]).flat().length, 2, "cycles do not hang");
});

test("sparkline points stay inside the box", () => {
  const pts = sparklinePoints([["2026-11-24T10:00:00.000Z", 0.001], ["2026-11-24T10:00:10.000Z", 0.004], ["2026-11-24T10:00:20.000Z", 0.01]], 240, 48, 3);
  assert.equal(pts.length, 3);
  for (const [x, y] of pts) assert.ok(x >= 3 && x <= 237 && y >= 3 && y <= 45);
  assert.deepEqual(pts.at(-1), [237, 3]);
  assert.equal(sparklinePoints([], 240, 48).length, 0);
  assert.equal(sparklinePoints([["2026-11-24T10:00:00.000Z", 1]], 240, 48).length, 2);
});
