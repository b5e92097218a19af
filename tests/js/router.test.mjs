import test from "node:test";
import assert from "node:assert/strict";
import { createRouter } from "../../static/js/router.js";

const env = (seq, event = "token_stream", data = {}) => ({
  event,
  data,
  timestamp: "2026-11-24T10:00:00.000Z",
  node_id: null,
  seq,
  session_id: "s",
});

function harness(opts = {}) {
  const calls = { applied: [], snapshots: [], ephemeral: [], resyncs: [], invalid: [] };
  const store = {
    apply: (e) => calls.applied.push(e.seq),
    hydrate: (d) => calls.snapshots.push(d),
    setPresence: () => calls.ephemeral.push("presence"),
  };
  const replies = { handleReply: (e) => calls.ephemeral.push(e.event) };
  const router = createRouter({
    store,
    replies,
    resync: (last) => calls.resyncs.push(last),
    invalid: (f) => calls.invalid.push(f),
    ...opts,
  });
  return { router, calls };
}

test("applies in-order events and tracks lastSeq", () => {
  const { router, calls } = harness();
  assert.equal(router.lastSeq, 0);
  [1, 2, 3].forEach((s) => router.handle(env(s)));
  assert.deepEqual(calls.applied, [1, 2, 3]);
  assert.equal(router.lastSeq, 3);
});

test("drops duplicates (seq <= lastSeq)", () => {
  const { router, calls } = harness();
  [1, 2, 2, 1, 3, 3].forEach((s) => router.handle(env(s)));
  assert.deepEqual(calls.applied, [1, 2, 3]);
  assert.equal(router.stats.duplicates, 3);
  assert.deepEqual(calls.resyncs, []);
});

test("a gap is not applied and asks for one resync with the last applied seq", () => {
  const { router, calls } = harness();
  router.handle(env(1));
  router.handle(env(3));
  router.handle(env(4));
  assert.deepEqual(calls.applied, [1]);
  assert.deepEqual(calls.resyncs, [1], "resync requested once, with lastSeq");
  assert.equal(router.lastSeq, 1);
  assert.equal(router.resyncPending, true);
  // The replay after reconnecting with last_seq=1 fills the hole; nothing is applied twice.
  router.connectionOpened();
  [2, 3, 4, 4].forEach((s) => router.handle(env(s)));
  assert.deepEqual(calls.applied, [1, 2, 3, 4]);
  assert.equal(router.resyncPending, false);
});

test("a new gap after a reconnect asks again", () => {
  const { router, calls } = harness();
  router.handle(env(1));
  router.handle(env(5));
  router.connectionOpened();
  router.handle(env(7));
  assert.deepEqual(calls.resyncs, [1, 1]);
});

test("batch frames are unpacked in order as if each arrived alone", () => {
  const { router, calls } = harness();
  router.handle(env(1));
  router.handle({
    event: "batch",
    data: { events: [env(1), env(2), env(null, "presence", { count: 2, users: [] }), env(3), env(5), env(4)] },
    timestamp: "2026-11-24T10:00:00.000Z",
    node_id: null,
    seq: null,
    session_id: "s",
  });
  assert.deepEqual(calls.applied, [1, 2, 3, 4], "dup 1 dropped, 5 is a gap, 4 applies in order");
  assert.deepEqual(calls.ephemeral, ["presence"]);
  assert.deepEqual(calls.resyncs, [3]);
});

test("a batch as JSON text is parsed and unpacked", () => {
  const { router, calls } = harness();
  router.handle(JSON.stringify({ event: "batch", data: { events: [env(1), env(2)] }, seq: null }));
  assert.deepEqual(calls.applied, [1, 2]);
});

test("snapshot replaces state and resets lastSeq to data.last_seq (down or up)", () => {
  const { router, calls } = harness();
  [1, 2, 3, 4, 5].forEach((s) => router.handle(env(s)));
  router.handle(env(null, "snapshot", { last_seq: 3, state: {}, resync: true }));
  assert.equal(router.lastSeq, 3);
  assert.equal(calls.snapshots.length, 1);
  router.handle(env(4));
  assert.deepEqual(calls.applied, [1, 2, 3, 4, 5, 4]);
  router.handle(env(null, "snapshot", { last_seq: 40, state: {} }));
  router.handle(env(40));
  router.handle(env(41));
  assert.equal(router.lastSeq, 41);
  assert.deepEqual(calls.applied.slice(-1), [41]);
});

test("a snapshot clears a pending resync", () => {
  const { router, calls } = harness();
  router.handle(env(1));
  router.handle(env(3));
  router.handle(env(null, "snapshot", { last_seq: 10, state: {}, resync: true }));
  assert.equal(router.resyncPending, false);
  router.handle(env(12));
  assert.deepEqual(calls.resyncs, [1, 10]);
});

test("replies (seq null) go to the command client, pong stops at the router; logged errors are applied", () => {
  const { router, calls } = harness();
  router.handle(env(null, "ack", { id: "a", cmd: "pause_session", duplicate: false }));
  router.handle(env(null, "pong", { server_time: "x" }));
  router.handle(env(null, "error", { code: "forbidden", error: "no", id: "b" }));
  router.handle(env(1, "error", { error: "node failed" }));
  assert.deepEqual(calls.ephemeral, ["ack", "error"]);
  assert.equal(router.stats.ephemeral, 3);
  assert.deepEqual(calls.applied, [1]);
  assert.equal(router.lastSeq, 1, "ephemeral events do not move lastSeq");
});

test("invalid frames are reported, not thrown", () => {
  const { router, calls } = harness();
  router.handle("{not json");
  router.handle({ type: "token_stream", seq: 1 });
  router.handle(null);
  assert.equal(calls.invalid.length, 3);
  assert.deepEqual(calls.applied, []);
});

test("the router can start from a known lastSeq", () => {
  const { router, calls } = harness({ lastSeq: 7 });
  router.handle(env(7));
  router.handle(env(8));
  assert.deepEqual(calls.applied, [8]);
});
