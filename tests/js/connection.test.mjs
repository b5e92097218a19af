import test from "node:test";
import assert from "node:assert/strict";
import { buildSocketUrl, createConnection, sessionSocketPath, STATES } from "../../static/js/connection.js";
import { createRouter } from "../../static/js/router.js";
import { createStore } from "../../static/js/store.js";

// ------------------------------------------------------------------ fakes

class FakeTimers {
  constructor() {
    this.t = 0;
    this.nextId = 1;
    this.timers = new Map();
    this.setTimeout = (fn, ms = 0) => this.#add(fn, ms, false);
    this.setInterval = (fn, ms = 0) => this.#add(fn, ms, true);
    this.clearTimeout = (id) => this.timers.delete(id);
    this.clearInterval = (id) => this.timers.delete(id);
    this.now = () => this.t;
  }
  #add(fn, ms, repeat) {
    const id = this.nextId++;
    this.timers.set(id, { fn, at: this.t + Math.max(0, ms), ms: Math.max(1, ms), repeat });
    return id;
  }
  get pending() {
    return this.timers.size;
  }
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let nextId = null;
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (!next || timer.at < next.at || (timer.at === next.at && id < nextId))) {
          next = timer;
          nextId = id;
        }
      }
      if (!next) break;
      this.t = next.at;
      if (next.repeat) next.at += next.ms;
      else this.timers.delete(nextId);
      next.fn();
    }
    this.t = end;
  }
}

function makeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(JSON.parse(data));
    }
    close(code = 1000, reason = "") {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // server-side helpers
    serverOpen() {
      this.readyState = 1;
      this.onopen && this.onopen({});
    }
    serverSend(obj) {
      this.onmessage && this.onmessage({ data: typeof obj === "string" ? obj : JSON.stringify(obj) });
    }
    serverClose(code, wasClean = code === 1000 || code >= 4000) {
      this.readyState = 3;
      this.onerror && code === 1006 && this.onerror({});
      this.onclose && this.onclose({ code, reason: "", wasClean });
    }
  }
  return { FakeWebSocket, sockets };
}

class FakeTarget {
  constructor(props = {}) {
    Object.assign(this, props);
    this.listeners = new Map();
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
  }
  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }
  dispatch(type) {
    for (const fn of this.listeners.get(type) || []) fn({ type });
  }
}

function setup(options = {}) {
  const timers = new FakeTimers();
  const { FakeWebSocket, sockets } = makeWebSocketClass();
  const win = new FakeTarget();
  const doc = new FakeTarget({ visibilityState: "visible" });
  const states = [];
  const messages = [];
  let opens = 0;
  let lastSeq = 0;
  const conn = createConnection({
    url: () => buildSocketUrl({ protocol: "http:", host: "room.test:8000" }, sessionSocketPath("abc"), lastSeq),
    WebSocket: FakeWebSocket,
    timers,
    now: timers.now,
    random: () => 1, // equal jitter at its upper bound: delay == ceiling
    windowTarget: win,
    documentTarget: doc,
    onMessage: (m) => messages.push(m),
    onOpen: () => (opens += 1),
    onStateChange: (info) => states.push(info.state),
    ...options,
  });
  return {
    conn,
    timers,
    sockets,
    win,
    doc,
    states,
    messages,
    get opens() {
      return opens;
    },
    setLastSeq: (n) => (lastSeq = n),
    last: () => sockets[sockets.length - 1],
  };
}

const pings = (socket) => socket.sent.filter((f) => f.cmd === "ping");

// ------------------------------------------------------------------ URL

test("URL: ws/wss from the page's protocol, host kept, last_seq only when > 0", () => {
  const path = sessionSocketPath("s-1");
  assert.equal(path, "/ws/sessions/s-1/");
  assert.equal(buildSocketUrl({ protocol: "http:", host: "h:8000" }, path, 0), "ws://h:8000/ws/sessions/s-1/");
  assert.equal(buildSocketUrl({ protocol: "https:", host: "example.org" }, path, 0), "wss://example.org/ws/sessions/s-1/");
  assert.equal(buildSocketUrl({ protocol: "https:", host: "example.org" }, path, 42), "wss://example.org/ws/sessions/s-1/?last_seq=42");
});

// ------------------------------------------------------------------ connect

test("connect opens one socket, goes connecting -> connected, and a second connect is a no-op", () => {
  const h = setup();
  assert.equal(h.conn.state, STATES.DISCONNECTED);
  h.conn.connect();
  assert.equal(h.sockets.length, 1);
  assert.equal(h.last().url, "ws://room.test:8000/ws/sessions/abc/");
  assert.equal(h.conn.state, STATES.CONNECTING);
  h.conn.connect();
  assert.equal(h.sockets.length, 1);
  h.last().serverOpen();
  assert.equal(h.conn.state, STATES.CONNECTED);
  assert.equal(h.opens, 1);
  h.conn.connect();
  assert.equal(h.sockets.length, 1);
  h.last().serverSend({ event: "pong", data: {}, seq: null });
  assert.equal(h.messages.length, 1);
});

test("send: only while connected; frames are {cmd, data, id} with unique ids", () => {
  const h = setup();
  assert.equal(h.conn.send("start_session"), null, "nothing sent before connecting");
  h.conn.connect();
  assert.equal(h.conn.send("start_session"), null, "nothing sent while connecting");
  h.last().serverOpen();
  const a = h.conn.send("user_input", { text: "hi" });
  const b = h.conn.send("pause_session");
  assert.ok(a && b && a !== b);
  assert.deepEqual(h.last().sent, [
    { cmd: "user_input", data: { text: "hi" }, id: a },
    { cmd: "pause_session", data: {}, id: b },
  ]);
  assert.ok(a.length <= 64);
});

// ------------------------------------------------------------------ heartbeat

test("heartbeat: a ping every 15 s while frames keep arriving", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  h.timers.advance(14999);
  assert.equal(pings(h.last()).length, 0);
  h.timers.advance(1);
  assert.equal(pings(h.last()).length, 1);
  for (let i = 0; i < 5; i += 1) {
    h.last().serverSend({ event: "pong", data: { server_time: "x" }, seq: null });
    h.timers.advance(15000);
  }
  assert.equal(pings(h.last()).length, 6);
  assert.equal(h.sockets.length, 1);
  assert.equal(h.conn.state, STATES.CONNECTED);
});

test("heartbeat: each ping carries what heartbeatData returns then (the page: last_seq)", () => {
  let seq = 7;
  const h = setup({ heartbeatData: () => ({ last_seq: seq }) });
  h.conn.connect();
  h.last().serverOpen();
  h.timers.advance(15000);
  seq = 42;
  h.last().serverSend({ event: "pong", data: { server_time: "x" }, seq: null });
  h.timers.advance(15000);
  assert.deepEqual(pings(h.last()).map((f) => f.data), [{ last_seq: 7 }, { last_seq: 42 }]);
});

test("heartbeat: no frame within 2 intervals -> socket closed as dead and a reconnect scheduled", () => {
  const h = setup();
  h.conn.connect();
  const first = h.last();
  first.serverOpen();
  h.timers.advance(15000); // ping, no pong
  assert.equal(first.closedWith, null);
  h.timers.advance(15000); // 30 s of silence
  assert.ok(first.closedWith, "dead socket closed by the client");
  assert.equal(h.conn.state, STATES.RECONNECTING);
  assert.equal(h.conn.attempt, 1);
  h.timers.advance(500);
  assert.equal(h.sockets.length, 2);
  // the dead socket's late close event is ignored
  first.onclose && first.onclose({ code: 1006 });
  assert.equal(h.sockets.length, 2);
});

test("heartbeat: any frame (an event, not only pong) keeps the socket alive", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  for (let i = 0; i < 10; i += 1) {
    h.timers.advance(10000);
    h.last().serverSend({ event: "token_stream", data: {}, seq: i + 1 });
  }
  assert.equal(h.sockets.length, 1);
  assert.equal(h.conn.state, STATES.CONNECTED);
});

test("a socket that never opens is given up after the connect timeout and retried", () => {
  const h = setup({ connectTimeoutMs: 5000 });
  h.conn.connect();
  h.timers.advance(5000);
  assert.ok(h.sockets[0].closedWith);
  assert.equal(h.conn.state, STATES.RECONNECTING);
  h.timers.advance(500);
  assert.equal(h.sockets.length, 2);
});

// ------------------------------------------------------------------ reconnect

test("unclean close -> reconnect with growing delays, then give up after 10 attempts; Retry starts over", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  h.last().serverClose(1006, false);
  const delays = [];
  for (let attempt = 1; attempt <= 10; attempt += 1) {
    assert.equal(h.conn.state, STATES.RECONNECTING);
    assert.equal(h.conn.attempt, attempt);
    const before = h.sockets.length;
    const start = h.timers.t;
    while (h.sockets.length === before) h.timers.advance(50);
    delays.push(h.timers.t - start);
    h.last().serverClose(1006, false); // fails before opening
  }
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000, 15000, 15000]);
  assert.equal(h.conn.state, STATES.DISCONNECTED);
  assert.equal(h.conn.info.gaveUp, true);
  h.timers.advance(120000);
  assert.equal(h.sockets.length, 11, "no further attempts after giving up");
  assert.equal(h.timers.pending, 0, "no timer left behind");
  h.conn.retry();
  assert.equal(h.sockets.length, 12);
  assert.equal(h.conn.attempt, 0);
  h.last().serverOpen();
  assert.equal(h.conn.state, STATES.CONNECTED);
});

test("a server close with code 1000 also reconnects (only a deliberate disconnect does not)", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  h.last().serverClose(1000, true);
  assert.equal(h.conn.state, STATES.RECONNECTING);
  h.timers.advance(500);
  assert.equal(h.sockets.length, 2);
});

test("the attempt counter resets only after a connection stayed up for stableMs", () => {
  const h = setup({ stableMs: 10000 });
  h.conn.connect();
  h.last().serverOpen();
  h.last().serverClose(1006, false);
  h.timers.advance(500);
  h.last().serverOpen();
  assert.equal(h.conn.attempt, 1, "an open alone does not reset");
  h.last().serverSend({ event: "pong", data: {}, seq: null });
  h.timers.advance(10000);
  assert.equal(h.conn.attempt, 0);
});

test("4409 (too slow) and 4408 (idle) reconnect at once without resetting the attempt counter", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  h.last().serverClose(4409);
  assert.equal(h.sockets.length, 2, "reconnected immediately");
  assert.equal(h.conn.attempt, 1);
  h.last().serverOpen();
  h.last().serverClose(4408);
  assert.equal(h.sockets.length, 3);
  assert.equal(h.conn.attempt, 2, "counter not reset");
});

test("4412 (rights changed) reconnects at once asking for a fresh snapshot; other closes do not", () => {
  const asked = [];
  const h = setup({ url: (opts) => (asked.push(Boolean(opts?.fresh)), "ws://room.test/ws/sessions/abc/") });
  h.conn.connect();
  h.last().serverOpen();
  h.last().serverClose(4412);
  assert.equal(h.sockets.length, 2, "reconnected immediately");
  h.last().serverOpen();
  h.last().serverClose(4409);
  assert.deepEqual(asked, [false, true, false]);
});

for (const code of [4401, 4403, 4404]) {
  test(`close ${code} is final: no reconnect, not on online/visible either`, () => {
    const h = setup();
    h.conn.connect();
    h.last().serverOpen();
    h.last().serverClose(code);
    assert.equal(h.conn.state, STATES.DISCONNECTED);
    assert.equal(h.conn.info.finalCode, code);
    assert.ok(h.conn.info.finalMessage);
    assert.equal(h.timers.pending, 0);
    h.timers.advance(60000);
    h.win.dispatch("online");
    h.doc.dispatch("visibilitychange");
    assert.equal(h.sockets.length, 1);
  });
}

// ------------------------------------------------------------------ deliberate disconnect

test("deliberate disconnect closes cleanly, cancels the heartbeat and does not reconnect", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  assert.ok(h.timers.pending > 0);
  h.conn.disconnect();
  assert.deepEqual(h.sockets[0].closedWith.code, 1000);
  assert.equal(h.conn.state, STATES.DISCONNECTED);
  assert.equal(h.timers.pending, 0);
  h.sockets[0].onclose && h.sockets[0].onclose({ code: 1000, wasClean: true });
  h.timers.advance(100000);
  h.win.dispatch("online");
  assert.equal(h.sockets.length, 1);
  assert.equal(h.conn.send("ping"), null);
});

test("deliberate disconnect during a backoff wait cancels the pending reconnect", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  h.last().serverClose(1006, false);
  assert.equal(h.conn.state, STATES.RECONNECTING);
  h.conn.disconnect();
  assert.equal(h.timers.pending, 0);
  h.timers.advance(60000);
  assert.equal(h.sockets.length, 1);
  h.conn.connect();
  assert.equal(h.sockets.length, 2, "connect() after a disconnect works again");
});

// ------------------------------------------------------------------ online / visible

test("online event reconnects at once during a backoff wait", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  h.last().serverClose(1006, false);
  h.win.dispatch("online");
  assert.equal(h.sockets.length, 2);
  assert.equal(h.timers.t, 0, "no time passed");
  h.timers.advance(1000);
  assert.equal(h.sockets.length, 2, "the cancelled backoff timer does not open a second socket");
});

test("tab becoming visible reconnects at once when not connected; hidden does nothing", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  h.last().serverClose(1006, false);
  h.doc.visibilityState = "hidden";
  h.doc.dispatch("visibilitychange");
  assert.equal(h.sockets.length, 1);
  h.doc.visibilityState = "visible";
  h.doc.dispatch("visibilitychange");
  assert.equal(h.sockets.length, 2);
});

test("online / visible do nothing while connected", () => {
  const h = setup();
  h.conn.connect();
  h.last().serverOpen();
  h.win.dispatch("online");
  h.doc.dispatch("visibilitychange");
  assert.equal(h.sockets.length, 1);
});

test("online after giving up starts a fresh round of attempts", () => {
  const h = setup({ backoff: { maxAttempts: 2 } });
  h.conn.connect();
  h.last().serverClose(1006, false);
  h.timers.advance(500);
  h.last().serverClose(1006, false);
  h.timers.advance(1000);
  h.last().serverClose(1006, false);
  assert.equal(h.conn.info.gaveUp, true);
  assert.equal(h.sockets.length, 3);
  h.win.dispatch("online");
  assert.equal(h.sockets.length, 4);
  assert.equal(h.conn.attempt, 0);
});

test("destroy removes the listeners", () => {
  const h = setup();
  h.conn.connect();
  h.conn.destroy();
  assert.equal(h.win.listeners.get("online").size, 0);
  assert.equal(h.doc.listeners.get("visibilitychange").size, 0);
});

// ------------------------------------------------------------------ last_seq and resync

test("reconnect URL carries last_seq once events were applied", () => {
  const h = setup();
  h.conn.connect();
  assert.ok(!h.last().url.includes("last_seq"));
  h.last().serverOpen();
  h.setLastSeq(17);
  h.last().serverClose(1006, false);
  h.timers.advance(500);
  assert.equal(h.last().url, "ws://room.test:8000/ws/sessions/abc/?last_seq=17");
});

test("router gap -> connection.resync: the socket is recycled and reopened with last_seq", () => {
  let conn;
  const router = createRouter({ store: createStore(), resync: () => conn.resync("gap") });
  const timers = new FakeTimers();
  const { FakeWebSocket, sockets } = makeWebSocketClass();
  conn = createConnection({
    url: () => buildSocketUrl({ protocol: "https:", host: "x.test" }, "/ws/sessions/s/", router.lastSeq),
    WebSocket: FakeWebSocket,
    timers,
    now: timers.now,
    onMessage: (m) => router.handle(m),
    onOpen: () => router.connectionOpened(),
  });
  conn.connect();
  sockets[0].serverOpen();
  const ev = (seq) => ({ event: "execution:paused", data: {}, timestamp: "t", node_id: null, seq, session_id: "s" });
  sockets[0].serverSend(ev(1));
  sockets[0].serverSend(ev(2));
  sockets[0].serverSend(ev(4)); // gap
  assert.ok(sockets[0].closedWith, "old socket closed");
  assert.equal(sockets.length, 2, "reconnected at once");
  assert.equal(sockets[1].url, "wss://x.test/ws/sessions/s/?last_seq=2");
  sockets[0].serverSend(ev(5)); // late frame on the old socket is ignored
  assert.equal(router.lastSeq, 2);
  sockets[1].serverOpen();
  [3, 4, 5].forEach((s) => sockets[1].serverSend(ev(s)));
  assert.equal(router.lastSeq, 5);
});
