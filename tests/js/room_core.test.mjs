import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRoomCore } from "../../static/js/room_core.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const scenario = (name) => JSON.parse(fs.readFileSync(path.join(here, "..", "fixtures", "protocol", "scenarios", name), "utf8"));

function env() {
  const sockets = [];
  class WS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      sockets.push(this);
    }
    send(t) {
      this.sent.push(JSON.parse(t));
    }
    close(code) {
      this.closed = code;
      this.readyState = 3;
    }
    open() {
      this.readyState = 1;
      this.onopen({});
    }
    recv(obj) {
      this.onmessage({ data: JSON.stringify(obj) });
    }
    drop(code = 1006) {
      this.readyState = 3;
      this.onclose({ code, wasClean: false });
    }
  }
  const timers = { setTimeout: () => 0, clearTimeout() {}, setInterval: () => 0, clearInterval() {} };
  return { sockets, WS, timers };
}

function makeCore(extra = {}) {
  const e = env();
  const toasts = [];
  const core = createRoomCore({
    config: { session_id: "sid-1", ws_path: "/ws/sessions/sid-1/", user: "alice", can_control: true, title: "T" },
    location: { protocol: "http:", host: "localhost:8000" },
    WebSocket: e.WS,
    timers: e.timers,
    windowTarget: null,
    documentTarget: null,
    toast: (text, opts) => toasts.push({ text, ...opts }),
    ...extra,
  });
  return { core, ...e, toasts };
}

test("the room connects as soon as it starts (the original forgot to)", () => {
  const h = makeCore();
  assert.equal(h.sockets.length, 0);
  h.core.start();
  assert.equal(h.sockets.length, 1);
  assert.equal(h.sockets[0].url, "ws://localhost:8000/ws/sessions/sid-1/");
  assert.equal(h.core.conn.state, "connecting");
});

test("snapshot hydrates state and meta; events fold; reconnect asks for last_seq", () => {
  const sc = scenario("reject_retry.json");
  const h = makeCore();
  h.core.start();
  const ws = h.sockets[0];
  ws.open();
  ws.recv({ event: "snapshot", data: sc.snapshot, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  assert.equal(h.core.meta.hydrated, true);
  assert.equal(h.core.meta.workflow.slug, "draft-review");
  assert.deepEqual(h.core.meta.presence, sc.snapshot.presence);
  assert.equal(h.core.state.status, "waiting_review");
  ws.recv({ event: "batch", data: { events: sc.events }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  assert.deepEqual(h.core.state, sc.expected_state);
  ws.drop();
  // the fake timers never fire: trigger the pending reconnect by hand through wake()
  h.core.connection.wake();
  assert.equal(h.sockets[1].url, `ws://localhost:8000/ws/sessions/sid-1/?last_seq=${sc.events.at(-1).seq}`);
});

test("commands: ack resolves, error reply rejects and shows a toast, stray errors toast too", async () => {
  const h = makeCore();
  h.core.start();
  const ws = h.sockets[0];
  ws.open();
  const ok = h.core.sendCommand("pause_session");
  const sent = ws.sent.find((f) => f.cmd === "pause_session");
  ws.recv({ event: "ack", data: { id: sent.id, cmd: "pause_session", duplicate: false }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  assert.equal((await ok).cmd, "pause_session");

  const bad = h.core.sendCommand("start_session");
  const sent2 = ws.sent.find((f) => f.cmd === "start_session");
  ws.recv({ event: "error", data: { code: "invalid_state", error: "already running", id: sent2.id }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  await assert.rejects(bad, { code: "invalid_state" });
  assert.deepEqual(h.toasts.at(-1), { text: "already running", kind: "error", title: "Start failed" });

  ws.recv({ event: "error", data: { code: "bad_json", error: "bad frame", id: null }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  assert.equal(h.toasts.at(-1).text, "bad frame");
  assert.equal(h.core.state.error, null, "command replies never reach the folded state");
});

test("commands while disconnected are refused visibly", async () => {
  const h = makeCore();
  await assert.rejects(h.core.sendCommand("user_input", { text: "hi" }), { code: "disconnected" });
  assert.equal(h.toasts.at(-1).title, "Send failed");
});

test("presence updates the watchers; a resync snapshot after hydration is announced", () => {
  const sc = scenario("reject_retry.json");
  const h = makeCore();
  h.core.start();
  const ws = h.sockets[0];
  ws.open();
  ws.recv({ event: "presence", data: { count: 4, users: ["a", "b", "c", "d"] }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  assert.equal(h.core.meta.presence.count, 4);
  ws.recv({ event: "snapshot", data: { ...sc.snapshot, resync: true }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  assert.equal(h.toasts.length, 0, "first snapshot: nothing to announce");
  ws.recv({ event: "snapshot", data: { ...sc.snapshot, resync: true }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  assert.equal(h.toasts.at(-1).kind, "info");
});

test("a gap makes the room reconnect at once with the last applied seq", () => {
  const sc = scenario("demo_run.json");
  const h = makeCore();
  h.core.start();
  h.sockets[0].open();
  h.sockets[0].recv(sc.events[0]);
  h.sockets[0].recv(sc.events[1]);
  h.sockets[0].recv(sc.events[3]);
  assert.equal(h.sockets.length, 2);
  assert.ok(h.sockets[1].url.endsWith("?last_seq=2"));
});

test("frames flow forward to the store's subscribers; command replies stop at the command client", async () => {
  const sc = scenario("demo_run.json");
  const h = makeCore();
  const seen = [];
  h.core.store.subscribe((state, change) => seen.push(change.event));
  h.core.start();
  const ws = h.sockets[0];
  ws.open();
  ws.recv({ event: "snapshot", data: { last_seq: 0, state: {} }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  ws.recv({ event: "presence", data: { count: 2, users: ["a", "b"] }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  ws.recv(sc.events[0]);
  const sent = h.core.sendCommand("pause_session");
  ws.recv({ event: "ack", data: { id: ws.sent.at(-1).id, cmd: "pause_session", duplicate: false }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  await sent;
  ws.recv({ event: "pong", data: { server_time: "x" }, timestamp: "t", node_id: null, seq: null, session_id: "sid-1" });
  assert.deepEqual(seen, ["connection", "connection", "snapshot", "presence", sc.events[0].event]);
  assert.equal(h.core.conn.state, "connected");
  assert.equal(h.core.router.lastSeq, sc.events[0].seq);
});
