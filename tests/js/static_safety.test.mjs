// Static checks on the client: no HTML parsing of server text, no console.log, no bare
// imports (plain ES modules served as-is), and the templates carry the data-testids the
// browser tests rely on.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, "..", "..");
const jsDir = path.join(repo, "static", "js");
const jsFiles = fs.readdirSync(jsDir).filter((f) => f.endsWith(".js"));
const read = (p) => fs.readFileSync(p, "utf8");

test("no innerHTML / outerHTML / insertAdjacentHTML / document.write / eval in the client", () => {
  for (const f of jsFiles) {
    const src = read(path.join(jsDir, f));
    for (const bad of ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"]) {
      assert.ok(!src.includes(bad), `${f} uses ${bad}`);
    }
  }
});

test("no console.log in the client", () => {
  for (const f of jsFiles) assert.ok(!/console\.log/.test(read(path.join(jsDir, f))), `${f} has console.log`);
});

test("only relative imports of files that exist (no build step, no npm packages)", () => {
  for (const f of jsFiles) {
    const src = read(path.join(jsDir, f));
    for (const m of src.matchAll(/^\s*(?:import|export)\s[^"']*?from\s+["']([^"']+)["']/gm)) {
      assert.match(m[1], /^\.\/[\w.-]+\.js$/, `${f} imports ${m[1]}`);
      assert.ok(fs.existsSync(path.join(jsDir, m[1])), `${f} imports missing ${m[1]}`);
    }
  }
});

test("room.html has the static data-testids, the config script and the module entry point", () => {
  const html = read(path.join(repo, "templates", "sessions", "room.html"));
  const ids = ["conn-badge", "status-badge", "watchers", "total-cost", "total-input", "total-output", "btn-start", "btn-pause", "btn-resume", "btn-stop", "user-input", "btn-send", "review-dialog", "review-comment", "btn-approve", "btn-reject", "progress", "btn-retry"];
  for (const id of ids) assert.ok(html.includes(`data-testid="${id}"`), `room.html lacks ${id}`);
  assert.ok(html.includes('room_config|json_script:"room-config"'));
  assert.match(html, /<script type="module" src="\{% static 'js\/room\.js' %\}"><\/script>/);
  assert.match(html, /<dialog[^>]*data-testid="review-dialog"/);
});

test("the dynamic data-testids are produced by the views", () => {
  const src = (f) => read(path.join(jsDir, f));
  assert.ok(src("view_workflow.js").includes("`node-${node.id}`"));
  assert.ok(src("view_workflow.js").includes('"data-status"'));
  assert.ok(src("view_transcript.js").includes("`message-${msg.key}`"));
  assert.ok(src("view_transcript.js").includes('"data-final"'));
  assert.ok(src("view_transcript.js").includes('"data-testid": "message-text"'));
  assert.ok(src("view_transcript.js").includes('"data-testid": "thinking"'));
});

test("logout is a POST form with csrf_token in base.html", () => {
  const html = read(path.join(repo, "templates", "base.html"));
  assert.match(html, /<form[^>]*method="post"[^>]*action="\{% url 'logout' %\}"[\s\S]*?\{% csrf_token %\}/);
  assert.ok(html.includes("Agent Meeting Room"));
});
