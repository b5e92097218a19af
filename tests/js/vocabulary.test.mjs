// The client's own tables cover the protocol's vocabulary (static/js/vocabulary.js, generated
// from realtime/vocabulary.py): a status, command or code added in Python fails here until the
// page knows how to show it. And the modules spell no protocol word themselves.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as vocabulary from "../../static/js/vocabulary.js";
import { CLIENT_ERROR_CODES } from "../../static/js/commands.js";
import { CLOSE_MESSAGES, FINAL_CLOSE_CODES, IMMEDIATE_CLOSE_CODES, SNAPSHOT_CLOSE_CODES } from "../../static/js/connection.js";
import { STATUS_LABELS } from "../../static/js/format.js";
import { COMMAND_LABELS, ERROR_TEXT } from "../../static/js/room_core.js";
import { emptyState, nodeCounts } from "../../static/js/run_store.js";
import { NODE_ICONS } from "../../static/js/view_workflow.js";

const { CLOSE_CODES, CommandName, ERROR_CODES, NodeStatus, SessionStatus } = vocabulary;
const here = path.dirname(fileURLToPath(import.meta.url));
const jsDir = path.join(here, "..", "..", "static", "js");
const sources = fs
  .readdirSync(jsDir)
  .filter((f) => f.endsWith(".js") && f !== "vocabulary.js")
  .map((f) => [f, fs.readFileSync(path.join(jsDir, f), "utf8")]);
const sorted = (values) => [...values].sort();
const ENUMS = Object.entries(vocabulary).filter(([, value]) => !Array.isArray(value));

test("vocabulary.js exports frozen enums and sets", () => {
  assert.deepEqual(ENUMS.map(([name]) => name).sort(), ["Access", "BudgetState", "CommandName", "EventName", "MessageKind", "NodeStatus", "NodeType", "ReviewDecision", "Role", "SessionStatus", "TokenType", "ToolCallStatus"]);
  for (const [name, value] of Object.entries(vocabulary)) assert.ok(Object.isFrozen(value), `${name} is not frozen`);
});

test("every session and node status has a label, and every label a status", () => {
  const statuses = new Set([...Object.values(SessionStatus), ...Object.values(NodeStatus)]);
  assert.deepEqual(sorted(Object.keys(STATUS_LABELS)), sorted(statuses));
});

test("every node status has an icon and is counted", () => {
  assert.deepEqual(sorted(Object.keys(NODE_ICONS)), sorted(Object.values(NodeStatus)));
  const counts = nodeCounts(emptyState());
  for (const status of Object.values(NodeStatus)) assert.equal(counts[status], 0, `nodeCounts lacks ${status}`);
});

test("every command a person sends has a label (ping is the heartbeat's)", () => {
  const sent = Object.values(CommandName).filter((cmd) => cmd !== CommandName.PING);
  assert.deepEqual(sorted(Object.keys(COMMAND_LABELS)), sorted(sent));
});

test("error texts are keyed by the protocol's error codes or the client's own", () => {
  for (const code of Object.values(CLIENT_ERROR_CODES)) assert.ok(!ERROR_CODES.includes(code), `${code} is also a server code`);
  const known = [...ERROR_CODES, ...Object.values(CLIENT_ERROR_CODES)];
  for (const code of Object.keys(ERROR_TEXT)) assert.ok(known.includes(code), `ERROR_TEXT has unknown code ${code}`);
});

test("the close codes the connection treats specially are the protocol's", () => {
  for (const code of [...FINAL_CLOSE_CODES, ...IMMEDIATE_CLOSE_CODES, ...SNAPSHOT_CLOSE_CODES, ...Object.keys(CLOSE_MESSAGES).map(Number)]) {
    assert.ok(CLOSE_CODES.includes(code), `${code} is not in protocol.CLOSE_CODES`);
  }
});

test("every vocabulary member a module names exists (a typo would be undefined)", () => {
  const members = new Map(ENUMS.map(([name, value]) => [name, value]));
  const pattern = new RegExp(`\\b(${[...members.keys()].join("|")})\\.([A-Za-z_]+)`, "g");
  let uses = 0;
  for (const [file, src] of sources) {
    for (const [, name, member] of src.matchAll(pattern)) {
      uses += 1;
      assert.ok(Object.hasOwn(members.get(name), member), `${file}: ${name}.${member} does not exist`);
    }
  }
  assert.ok(uses > 50, `only ${uses} uses found`);
});

test("no module spells a protocol word as a bare string: they use vocabulary.js", () => {
  // "error" is also a toast's kind and the fallback code of a reply without one, and "input"
  // a DOM event (TokenType's "input" is read through TokenType). Comments and the display
  // texts of a table keyed by a constant (`[NodeStatus.FAILED]: "failed"`) are not protocol
  // words.
  const words = new Set(ENUMS.flatMap(([, value]) => Object.values(value)).filter((w) => w !== "error" && w !== "input"));
  for (const [file, src] of sources) {
    const code = src
      .replace(/\/\*[\s\S]*?\*\//g, "")
      .replace(/(^|\s)\/\/.*$/gm, "$1")
      .replace(/^\s*\[\w+\.\w+\]: ".*$/gm, "");
    for (const [, literal] of code.matchAll(/"([^"\\\n]*)"/g)) {
      assert.ok(!words.has(literal), `${file} spells "${literal}": use the constant from vocabulary.js`);
    }
  }
});
