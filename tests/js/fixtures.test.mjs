// Contract between protocol.py and the browser: every event has one fixture, every fixture
// uses `event` (never `type`), the envelope has exactly its six keys, and the events and
// commands of vocabulary.js (the only place the client spells them) are protocol.py's.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  COMMANDS,
  CommandName,
  EPHEMERAL_EVENTS,
  EventName,
  LOGGED_EVENTS,
} from "../../static/js/vocabulary.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, "..", "..");
const eventsDir = path.join(repo, "tests", "fixtures", "protocol", "events");
const scenariosDir = path.join(repo, "tests", "fixtures", "protocol", "scenarios");
// The generated vocabulary.js holds protocol.py's tables (tests/realtime/test_vocabulary.py
// fails when it is stale), so these are the server's own lists.
const LOGGED = [...LOGGED_EVENTS];
const EPHEMERAL = [...EPHEMERAL_EVENTS];
const ALL = [...new Set([...LOGGED, ...EPHEMERAL])];
const ENVELOPE_KEYS = ["data", "event", "node_id", "seq", "session_id", "timestamp"];

const fixtureFiles = fs.readdirSync(eventsDir).filter((f) => f.endsWith(".json")).sort();
const readJson = (dir, f) => JSON.parse(fs.readFileSync(path.join(dir, f), "utf8"));

function assertEnvelope(frame, where) {
  assert.equal(Object.prototype.hasOwnProperty.call(frame, "type"), false, `${where}: has "type"`);
  assert.equal(typeof frame.event, "string", `${where}: "event" missing`);
  assert.deepEqual(Object.keys(frame).sort(), ENVELOPE_KEYS, `${where}: envelope keys`);
  assert.ok(ALL.includes(frame.event), `${where}: unknown event ${frame.event}`);
  assert.match(frame.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, `${where}: timestamp format`);
  assert.equal(typeof frame.data, "object", `${where}: data`);
  if (EPHEMERAL.includes(frame.event)) assert.equal(frame.seq, null, `${where}: ephemeral event with seq`);
  else if (frame.event !== "error") assert.ok(Number.isInteger(frame.seq) && frame.seq >= 1, `${where}: logged event without seq`);
  if (frame.event === "batch") frame.data.events.forEach((inner, i) => assertEnvelope(inner, `${where}.events[${i}]`));
}

test("the protocol tables reached vocabulary.js (sanity)", () => {
  assert.ok(LOGGED.includes("token_stream") && LOGGED.includes("node:parallel_start"));
  assert.ok(EPHEMERAL.includes("snapshot") && EPHEMERAL.includes("batch"));
  assert.ok(COMMANDS.includes("submit_review"));
});

test("one fixture per protocol event, named after it with ':' -> '_'", () => {
  const expected = ALL.map((e) => `${e.replace(/:/g, "_")}.json`).sort();
  assert.deepEqual(fixtureFiles, expected);
});

for (const f of fixtureFiles) {
  test(`fixture ${f} uses "event" (never "type") and is a valid envelope`, () => {
    const frame = readJson(eventsDir, f);
    assert.equal(`${frame.event.replace(/:/g, "_")}.json`, f);
    assertEnvelope(frame, f);
  });
}

test("every scenario event is a valid logged envelope with consecutive seq", () => {
  for (const f of fs.readdirSync(scenariosDir).filter((x) => x.endsWith(".json"))) {
    const sc = readJson(scenariosDir, f);
    let last = sc.snapshot ? sc.snapshot.last_seq : 0;
    sc.events.forEach((e, i) => {
      assertEnvelope(e, `${f}[${i}]`);
      assert.ok(LOGGED.includes(e.event), `${f}[${i}] is not a logged event`);
      assert.equal(e.seq, last + 1, `${f}[${i}] seq`);
      last = e.seq;
    });
  }
});

test("the browser's vocabulary.js names exactly the events and commands of protocol.py", () => {
  assert.deepEqual(Object.values(EventName).sort(), [...ALL].sort());
  assert.deepEqual(Object.values(CommandName).sort(), [...COMMANDS].sort());
});
