import test from "node:test";
import assert from "node:assert/strict";
import { createCommandClient } from "../../static/js/commands.js";

function fakeConnection(connected = true) {
  const sent = [];
  let n = 0;
  return {
    sent,
    connected,
    send(cmd, data) {
      if (!this.connected) return null;
      n += 1;
      const id = `id-${n}`;
      sent.push({ cmd, data, id });
      return id;
    },
  };
}

function fakeTimers() {
  const timers = new Map();
  let next = 1;
  return {
    timers,
    setTimeout: (fn) => {
      timers.set(next, fn);
      return next++;
    },
    clearTimeout: (id) => timers.delete(id),
    fireAll: () => [...timers.values()].forEach((fn) => fn()),
  };
}

const reply = (event, data) => ({ event, data, timestamp: "t", node_id: null, seq: null, session_id: "s" });

test("ack resolves the command with the same id", async () => {
  const connection = fakeConnection();
  const timers = fakeTimers();
  const client = createCommandClient({ connection, timers });
  const p = client.send("pause_session");
  assert.equal(client.pendingCount, 1);
  assert.equal(client.handleReply(reply("ack", { id: "id-1", cmd: "pause_session", duplicate: false })), true);
  assert.deepEqual(await p, { id: "id-1", cmd: "pause_session", duplicate: false });
  assert.equal(client.pendingCount, 0);
  assert.equal(timers.timers.size, 0);
});

test("an error reply with the id rejects with its code and text", async () => {
  const client = createCommandClient({ connection: fakeConnection(), timers: fakeTimers() });
  const p = client.send("start_session");
  client.handleReply(reply("error", { code: "forbidden", error: "watch only", id: "id-1" }));
  await assert.rejects(p, { code: "forbidden", error: "watch only", cmd: "start_session" });
});

test("errors for unknown ids are not claimed: they go to onStrayError (the room shows them as a toast)", () => {
  const stray = [];
  const client = createCommandClient({ connection: fakeConnection(), timers: fakeTimers(), onStrayError: (d) => stray.push(d) });
  assert.equal(client.handleReply(reply("error", { code: "bad_json", error: "x", id: null })), false);
  assert.equal(client.handleReply(reply("error", { code: "bad_json", error: "y", id: "nope" })), false);
  assert.equal(client.handleReply(reply("ack", { id: "nope", cmd: "ping", duplicate: false })), false);
  assert.equal(client.handleReply(reply("pong", { server_time: "x" })), false);
  assert.deepEqual(stray.map((d) => d.error), ["x", "y"], "only error replies are stray; a late ack is not");
});

test("not connected: rejected at once with code disconnected, nothing sent", async () => {
  const connection = fakeConnection(false);
  const client = createCommandClient({ connection, timers: fakeTimers() });
  await assert.rejects(client.send("user_input", { text: "hi" }), { code: "disconnected" });
  assert.equal(connection.sent.length, 0);
});

test("connection lost and timeouts reject what is pending", async () => {
  const timers = fakeTimers();
  const client = createCommandClient({ connection: fakeConnection(), timers });
  const a = client.send("stop_session");
  client.connectionLost();
  await assert.rejects(a, { code: "disconnected", cmd: "stop_session" });
  const b = client.send("resume_session");
  timers.fireAll();
  await assert.rejects(b, { code: "timeout" });
});
