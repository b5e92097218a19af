import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRouter } from "../../static/js/router.js";
import { createStore, emptyState, fold, foldAll } from "../../static/js/store.js";
import { reduceRun, nodeCounts, activeNodes, durationMs, allowedControls } from "../../static/js/run_store.js";
import { reduceSession, streamingMessage, usageRows } from "../../static/js/session_store.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const scenarioDir = path.join(here, "..", "fixtures", "protocol", "scenarios");
const scenarioFiles = fs.readdirSync(scenarioDir).filter((f) => f.endsWith(".json")).sort();
const load = (f) => JSON.parse(fs.readFileSync(path.join(scenarioDir, f), "utf8"));

function deepFreeze(o) {
  if (o && typeof o === "object" && !Object.isFrozen(o)) {
    Object.freeze(o);
    Object.values(o).forEach(deepFreeze);
  }
  return o;
}

const STATE_KEYS = ["status", "nodes", "messages", "usage", "cost_series", "pending_review", "reviews", "tool_calls", "started_at", "finished_at", "error", "members", "member_changes", "budget"].sort();

test("there are at least 3 scenarios, each with the documented shape", () => {
  assert.ok(scenarioFiles.length >= 3, `found ${scenarioFiles.length}`);
  for (const f of scenarioFiles) {
    const sc = load(f);
    assert.deepEqual(Object.keys(sc).sort(), ["description", "events", "expected_state", "snapshot"], f);
    assert.deepEqual(Object.keys(sc.expected_state).sort(), STATE_KEYS, f);
    if (sc.snapshot) assert.deepEqual(Object.keys(sc.snapshot.state).sort(), STATE_KEYS, f);
  }
});

for (const f of scenarioFiles) {
  test(`scenario ${f}: folding its events from its snapshot gives expected_state`, () => {
    const sc = load(f);
    const start = sc.snapshot ? structuredClone(sc.snapshot.state) : emptyState();
    deepFreeze(start);
    const events = deepFreeze(structuredClone(sc.events));
    assert.deepEqual(foldAll(start, events), sc.expected_state);
  });

  test(`scenario ${f}: through router + store (snapshot frame, duplicates, a batch) gives expected_state`, () => {
    const sc = load(f);
    const store = createStore();
    const router = createRouter({ store, resync: () => assert.fail("no gap expected") });
    if (sc.snapshot) {
      router.handle({ event: "snapshot", data: sc.snapshot, timestamp: "2026-11-24T00:00:00.000Z", node_id: null, seq: null, session_id: sc.snapshot.session.id });
    }
    const half = Math.floor(sc.events.length / 2);
    for (const e of sc.events.slice(0, half)) router.handle(JSON.stringify(e));
    // Replay the first half again (a reconnect that overlaps) plus the rest in one batch.
    router.handle({ event: "batch", data: { events: sc.events }, timestamp: "x", node_id: null, seq: null, session_id: "s" });
    assert.deepEqual(store.getState(), sc.expected_state);
    assert.equal(router.lastSeq, sc.events[sc.events.length - 1].seq);
  });
}

test("the empty state has the documented shape", () => {
  assert.deepEqual(emptyState(), {
    status: "created",
    nodes: {},
    messages: [],
    usage: { nodes: {}, input_tokens: 0, cached_input_tokens: 0, cache_write_tokens: 0, output_tokens: 0, reasoning_tokens: 0, cost_usd: 0, price_unknown: false },
    cost_series: [],
    pending_review: null,
    reviews: [],
    tool_calls: {},
    started_at: null,
    finished_at: null,
    error: null,
    members: {},
    member_changes: [],
    budget: null,
  });
});

test("member_changed sets or removes the member and logs the change", () => {
  let s = { ...emptyState(), members: { al: "owner" } };
  s = fold(s, E(1, "member_changed", { user: "bo", role: "viewer", previous: null, by: "al" }));
  s = fold(s, E(2, "member_changed", { user: "bo", role: "controller", previous: "viewer", by: "al" }));
  assert.deepEqual(s.members, { al: "owner", bo: "controller" });
  s = fold(s, E(3, "member_changed", { user: "bo", role: null, previous: "controller", by: null }));
  assert.deepEqual(s.members, { al: "owner" });
  assert.deepEqual(s.member_changes[2], { user: "bo", role: null, previous: "controller", by: null, link: null, at: "2026-11-24T10:00:03.000Z" });
});

const E = (seq, event, data, ts = `2026-11-24T10:00:${String(seq).padStart(2, "0")}.000Z`) => ({ event, data, timestamp: ts, node_id: data.node_id ?? null, seq, session_id: "s" });

test("token_stream merges chunks into one message per node answer; a finished node answering again opens #2", () => {
  let s = emptyState();
  s = fold(s, E(1, "token_stream", { node_id: "a", agent_id: "x", chunk: "Hel", is_thinking: false }));
  s = fold(s, E(2, "token_stream", { node_id: "a", agent_id: "x", chunk: "hmm", is_thinking: true }));
  s = fold(s, E(3, "token_stream", { node_id: "a", agent_id: "x", chunk: "lo", is_thinking: false }));
  assert.equal(s.messages.length, 1);
  assert.deepEqual(s.messages[0], { key: "a#1", kind: "agent", node_id: "a", agent_id: "x", user: null, text: "Hello", thinking: "hmm", final: false, started_at: "2026-11-24T10:00:01.000Z" });
  assert.equal(streamingMessage(s, "a").key, "a#1");
  s = fold(s, E(4, "node_state_change", { node_id: "a", status: "completed" }));
  assert.equal(s.messages[0].final, true);
  assert.equal(streamingMessage(s, "a"), null);
  s = fold(s, E(5, "token_stream", { node_id: "a", agent_id: "x", chunk: "Again", is_thinking: false }));
  assert.deepEqual(s.messages.map((m) => m.key), ["a#1", "a#2"]);
});

test("node_state_change: defaults, started_at kept, finished_at reset on running, error rules", () => {
  let s = emptyState();
  s = fold(s, E(1, "node_state_change", { node_id: "n", status: "running", agent_id: "ag" }));
  assert.deepEqual(s.nodes.n, { status: "running", agent_id: "ag", started_at: "2026-11-24T10:00:01.000Z", finished_at: null, error: null });
  s = fold(s, E(2, "node_state_change", { node_id: "n", status: "failed", error: "boom" }));
  assert.deepEqual(s.nodes.n, { status: "failed", agent_id: "ag", started_at: "2026-11-24T10:00:01.000Z", finished_at: "2026-11-24T10:00:02.000Z", error: "boom" });
  s = fold(s, E(3, "node_state_change", { node_id: "n", status: "skipped" }));
  assert.equal(s.nodes.n.error, "boom", "error kept when not running");
  s = fold(s, E(4, "node_state_change", { node_id: "n", status: "running", agent_id: null }));
  assert.deepEqual(s.nodes.n, { status: "running", agent_id: "ag", started_at: "2026-11-24T10:00:01.000Z", finished_at: null, error: null });
});

test("token_usage replaces per-node numbers, sets session totals, appends to cost_series", () => {
  let s = emptyState();
  const u = (seq, inT, outT, cost, sIn, sOut, sCost) =>
    E(seq, "token_usage", { node_id: "n", agent_id: "ag", model: "m", input_tokens: inT, output_tokens: outT, estimated_cost_usd: cost, final: false, session_input_tokens: sIn, session_output_tokens: sOut, session_cost_usd: sCost });
  s = fold(s, u(1, 10, 1, 0.001, 10, 1, 0.001));
  s = fold(s, u(2, 10, 5, 0.002, 10, 5, 0.002));
  // An event from before token types: the types it lacks are 0.
  const n = { agent_id: "ag", model: "m", input_tokens: 10, cached_input_tokens: 0, cache_write_tokens: 0, output_tokens: 5, reasoning_tokens: 0, cost_usd: 0.002 };
  assert.deepEqual(s.usage, { nodes: { n }, input_tokens: 10, cached_input_tokens: 0, cache_write_tokens: 0, output_tokens: 5, reasoning_tokens: 0, cost_usd: 0.002, price_unknown: false });
  assert.deepEqual(s.cost_series, [["2026-11-24T10:00:01.000Z", 0.001], ["2026-11-24T10:00:02.000Z", 0.002]]);
  assert.deepEqual(usageRows(s), [{ node_id: "n", ...n }]);
});

test("token_usage by type and with no price: null node cost, price_unknown for the session", () => {
  const s = fold(emptyState(), E(1, "token_usage", {
    node_id: "n", agent_id: "ag", model: "m", input_tokens: 10, cached_input_tokens: 6, cache_write_tokens: 1,
    output_tokens: 5, reasoning_tokens: 2, estimated_cost_usd: null, final: true, session_input_tokens: 10,
    session_cached_input_tokens: 6, session_cache_write_tokens: 1, session_output_tokens: 5,
    session_reasoning_tokens: 2, session_cost_usd: 0, session_price_unknown: true,
  }));
  assert.deepEqual(s.usage.nodes.n, { agent_id: "ag", model: "m", input_tokens: 10, cached_input_tokens: 6, cache_write_tokens: 1, output_tokens: 5, reasoning_tokens: 2, cost_usd: null });
  assert.equal(s.usage.cached_input_tokens, 6);
  assert.equal(s.usage.price_unknown, true);
});

test("budget_status sets the budget; a budget request is a pending review without a node", () => {
  let s = fold(emptyState(), E(1, "budget_status", { budget_usd: 0.5, cost_usd: 0.41, state: "warning" }));
  assert.deepEqual(s.budget, { budget_usd: 0.5, cost_usd: 0.41, state: "warning", at: "2026-11-24T10:00:01.000Z" });
  s = fold(s, E(2, "human_interaction_required", { node_id: "", reason: "Budget reached", timeout: null, round: 1, budget_usd: 0.5, cost_usd: 0.5 }));
  assert.equal(s.pending_review.budget_usd, 0.5);
  assert.equal(s.pending_review.node_id, "");
});

test("human_interaction_required: deadline from timeout, defaults for round and reviewed node", () => {
  let s = emptyState();
  s = fold(s, E(1, "human_interaction_required", { node_id: "r", reason: "check", timeout: 90 }, "2026-11-24T10:59:30.500Z"));
  assert.equal(s.status, "waiting_review");
  assert.deepEqual(s.pending_review, { node_id: "r", reason: "check", timeout: 90, deadline: "2026-11-24T11:01:00.500Z", reviewed_node_id: null, round: 1, tool_call_id: null, tool: null, arguments: null, budget_usd: null, cost_usd: null });
  s = fold(s, E(2, "human_interaction_required", { node_id: "r", reason: "again", reviewed_node_id: "d", round: 2 }));
  assert.deepEqual(s.pending_review, { node_id: "r", reason: "again", timeout: null, deadline: null, reviewed_node_id: "d", round: 2, tool_call_id: null, tool: null, arguments: null, budget_usd: null, cost_usd: null });
  s = fold(s, E(3, "review_submitted", { node_id: "r", decision: "approve", comment: "", by: "al", timed_out: false }));
  assert.equal(s.pending_review, null);
  assert.equal(s.status, "waiting_review", "status changes with node_resumed, not with the review");
  s = fold(s, E(4, "node_resumed", { node_id: "r" }));
  assert.equal(s.status, "running");
});

test("node_resumed does not resurrect a finished run", () => {
  let s = { ...emptyState(), status: "completed" };
  s = fold(s, E(1, "node_resumed", {}));
  assert.equal(s.status, "completed");
});

test("errors: logged ones set state.error, command replies (seq null) change nothing", () => {
  const s0 = emptyState();
  const reply = { ...E(1, "error", { error: "nope", code: "forbidden", id: "c1" }), seq: null };
  assert.equal(fold(s0, reply), s0);
  assert.equal(fold(s0, E(1, "error", { error: "provider down", node_id: "n" })).error, "provider down");
});

test("execution events move the status; completed takes the final usage totals", () => {
  let s = emptyState();
  s = fold(s, E(1, "execution:started", { workflow: "w", nodes: ["a", "b"] }));
  assert.equal(s.status, "running");
  assert.deepEqual(Object.keys(s.nodes), ["a", "b"]);
  assert.equal(s.started_at, "2026-11-24T10:00:01.000Z");
  s = fold(s, E(2, "execution:paused", {}));
  assert.equal(s.status, "paused");
  s = fold(s, E(3, "execution:resumed", {}));
  assert.equal(s.status, "running");
  s = fold(s, E(4, "execution:completed", { input_tokens: 5, output_tokens: 6, cost_usd: 0.5 }));
  assert.equal(s.status, "completed");
  assert.equal(s.finished_at, "2026-11-24T10:00:04.000Z");
  assert.deepEqual([s.usage.input_tokens, s.usage.output_tokens, s.usage.cost_usd], [5, 6, 0.5]);
  assert.equal(durationMs(s, 0), 3000);
});

test("user_message appends a final user message", () => {
  const s = fold(emptyState(), E(1, "user_message", { text: "<b>hi</b>", user: "al", message_id: "m1" }));
  assert.deepEqual(s.messages, [{ key: "user:m1", kind: "user", node_id: null, agent_id: null, user: "al", text: "<b>hi</b>", thinking: "", final: true, started_at: "2026-11-24T10:00:01.000Z" }]);
});

test("reducers are pure: the input state is never mutated", () => {
  for (const f of scenarioFiles) {
    const sc = load(f);
    let s = deepFreeze(sc.snapshot ? structuredClone(sc.snapshot.state) : emptyState());
    for (const e of sc.events) {
      const next = reduceSession(reduceRun(s, e), e);
      s = deepFreeze(next);
    }
  }
});

test("unknown events leave the state untouched", () => {
  const s = emptyState();
  assert.equal(fold(s, E(1, "node:parallel_start", { node_id: null, branches: ["a", "b"] })), s);
  assert.equal(fold(s, E(2, "something_new", {})), s);
});

test("selectors: counts, active nodes, allowed controls", () => {
  const sc = load("failure.json");
  const s = sc.expected_state;
  const counts = nodeCounts(s);
  assert.equal(counts.total, 5);
  assert.equal(counts.completed, 2);
  assert.equal(counts.failed, 1);
  assert.equal(counts.skipped, 2);
  assert.equal(counts.done, 5);
  assert.deepEqual(activeNodes(s), []);
  assert.deepEqual(allowedControls("created"), { start: true, pause: false, resume: false, stop: false, input: true });
  assert.deepEqual(allowedControls("running"), { start: false, pause: true, resume: false, stop: true, input: true });
  assert.deepEqual(allowedControls("paused"), { start: false, pause: false, resume: true, stop: true, input: true });
  assert.deepEqual(allowedControls("waiting_review"), { start: false, pause: false, resume: false, stop: true, input: true });
  assert.deepEqual(allowedControls("completed"), { start: false, pause: false, resume: false, stop: false, input: false });
});

test("the store notifies subscribers only on change", () => {
  const store = createStore();
  const seen = [];
  const off = store.subscribe((state, change) => seen.push(change.event));
  store.apply(E(1, "node:parallel_start", { node_id: null, branches: [] }));
  store.apply(E(2, "execution:paused", {}));
  store.hydrate({ state: emptyState() });
  off();
  store.apply(E(3, "execution:paused", {}));
  assert.deepEqual(seen, ["execution:paused", "snapshot"]);
});

test("resuming a session paused while a review waits goes back to waiting_review", () => {
  let s = emptyState();
  s = fold(s, E(1, "human_interaction_required", { node_id: "r", reason: "check", timeout: null }));
  s = fold(s, E(2, "execution:paused", {}));
  assert.equal(s.status, "paused");
  s = fold(s, E(3, "execution:resumed", {}));
  assert.equal(s.status, "waiting_review");
});

test("a snapshot takes the room facts it carries and keeps the rest; presence and conn replace theirs", () => {
  const store = createStore({ meta: { session: { id: "s", title: "T", status: "created" }, canControl: true }, conn: { state: "disconnected" } });
  const seen = [];
  store.subscribe((state, change) => seen.push(change));
  const workflow = { slug: "w", name: "W", nodes: [] };
  store.hydrate({ session: { status: "running" }, workflow, presence: { count: 2, users: ["a", "b"] }, can_control: false, state: { status: "running" }, last_seq: 3, resync: true });
  assert.deepEqual(store.getMeta(), { session: { id: "s", title: "T", status: "running" }, workflow, presence: { count: 2, users: ["a", "b"] }, canControl: false, hydrated: true });
  assert.deepEqual(store.getState(), { ...emptyState(), status: "running" });
  store.hydrate({ state: {}, resync: true });
  assert.equal(store.getMeta().workflow, workflow, "facts a snapshot lacks are kept");
  assert.equal(store.getMeta().canControl, false);
  assert.deepEqual(store.getState(), emptyState());
  store.setPresence({ count: 1, users: ["a"] });
  store.setConn({ state: "connected" });
  assert.deepEqual(store.getMeta().presence, { count: 1, users: ["a"] });
  assert.deepEqual(store.getConn(), { state: "connected" });
  assert.deepEqual(seen, [
    { event: "snapshot", resync: false }, // the first snapshot refreshes nothing on screen
    { event: "snapshot", resync: true },
    { event: "presence" },
    { event: "connection" },
  ]);
});
