// The replay plays the log through the room's one fold: any position equals foldAll of the
// events before it, whichever way the playhead got there.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { emptyState, foldAll } from "../../static/js/store.js";
import { CHECKPOINT_EVERY, IDLE_CAP_MS, createPlayer, createTimeline, loadPages } from "../../static/js/replay.js";
import { EventName, NodeStatus } from "../../static/js/vocabulary.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const demo = JSON.parse(fs.readFileSync(path.join(here, "..", "fixtures", "protocol", "scenarios", "demo_run.json"), "utf8"));
const logged = demo.events.filter((e) => e.seq !== null);

function synthetic(n, { gapAt = -1, gapMs = 60_000 } = {}) {
  const out = [];
  let t = Date.parse("2026-11-24T10:00:00.000Z");
  out.push({ event: EventName.EXECUTION_STARTED, data: { workflow: "w", nodes: ["a"] }, timestamp: new Date(t).toISOString(), node_id: null, seq: 1, session_id: "s" });
  out.push({ event: EventName.NODE_STATE_CHANGE, data: { node_id: "a", status: NodeStatus.RUNNING, agent_id: "x" }, timestamp: new Date(t).toISOString(), node_id: "a", seq: 2, session_id: "s" });
  for (let i = 3; i <= n; i += 1) {
    t += i === gapAt ? gapMs : 50;
    out.push({ event: EventName.TOKEN_STREAM, data: { chunk: `w${i} `, agent_id: "x", node_id: "a", is_thinking: false }, timestamp: new Date(t).toISOString(), node_id: "a", seq: i, session_id: "s" });
  }
  return out;
}

test("every position, reached forward, backward or by seq, is the fold of the events before it", () => {
  const timeline = createTimeline();
  timeline.append(logged);
  const player = createPlayer({ timeline });
  const positions = [logged.length, 3, Math.floor(logged.length / 2), 0, logged.length - 1, 1];
  for (const p of positions) {
    player.seek(p);
    assert.deepEqual(player.state, foldAll(emptyState(), logged.slice(0, p)), `position ${p}`);
  }
  const mid = logged[Math.floor(logged.length / 2)].seq;
  player.seekSeq(mid);
  assert.equal(player.seq, mid);
  assert.deepEqual(player.state, foldAll(emptyState(), logged.filter((e) => e.seq <= mid)));
  player.seek(logged.length);
  assert.deepEqual(player.state, demo.expected_state);
});

test("seeking back across checkpoints folds from the nearest one and agrees with a full fold", () => {
  const events = synthetic(CHECKPOINT_EVERY * 3 + 17);
  const timeline = createTimeline();
  timeline.append(events);
  const player = createPlayer({ timeline });
  player.seek(events.length);
  for (const p of [CHECKPOINT_EVERY * 2 + 5, CHECKPOINT_EVERY, 7, CHECKPOINT_EVERY * 3 + 1]) {
    player.seek(p);
    assert.equal(player.state.messages[0].text, foldAll(emptyState(), events.slice(0, p)).messages[0]?.text);
  }
});

test("long idle stretches are compressed and marked; playback follows the compressed clock", () => {
  const events = synthetic(40, { gapAt: 20, gapMs: 300_000 });
  const timeline = createTimeline();
  timeline.append(events);
  assert.deepEqual(timeline.idle, [{ index: 19, ms: 300_000 }]);
  assert.equal(timeline.duration, 37 * 50 + IDLE_CAP_MS);
  const player = createPlayer({ timeline });
  player.setSpeed(16);
  player.play();
  player.tick(0);
  assert.equal(player.position, 2); // both events at t=0
  player.tick(100); // 1.6 s of recorded time at 16x: past 17 tokens, not past the idle gap
  assert.equal(player.position, 19);
  player.tick(200);
  assert.ok(player.position > 19, "the 5-minute gap took 2 s of compressed time");
  player.setSpeed(0);
  player.tick(1);
  assert.ok(player.atEnd);
});

test("pages are appended in order, duplicates dropped; jump to a node's start; step", async () => {
  const events = synthetic(25);
  const timeline = createTimeline();
  const pages = [];
  await loadPages({
    fetchPage: async (after) => {
      const chunk = events.filter((e) => e.seq > after).slice(0, 10);
      const next = chunk.length ? chunk[chunk.length - 1].seq : after;
      return { events: chunk, last_seq: 25, next_after: next, done: next >= 25 };
    },
    onPage: (page) => {
      pages.push(page.length);
      timeline.append(page);
      timeline.append(page.slice(0, 2)); // a page seen twice changes nothing
    },
  });
  assert.deepEqual(pages, [10, 10, 5]);
  assert.equal(timeline.length, 25);
  const player = createPlayer({ timeline });
  assert.equal(player.jumpToNode("a"), 2);
  assert.equal(player.state.nodes.a.status, NodeStatus.RUNNING);
  assert.equal(player.jumpToNode("nope"), null);
  player.step();
  player.step(-2);
  assert.equal(player.position, 1);
});
