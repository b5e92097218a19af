// Three AG-UI clients against a running server, with the official @ag-ui/client (HttpAgent):
// A drives the demo session through its review interrupt (answered with `resume`); B joins the
// same thread mid-run; C watches the session's read-only stream, drops it half-way and resumes
// with Last-Event-ID. Prints one JSON document for tests/realtime/test_agui_client.py to check
// against the stored session. Env: BASE, TOKEN (control), WATCH_TOKEN, SESSION.
import { HttpAgent } from "@ag-ui/client";

const { BASE, TOKEN, WATCH_TOKEN, SESSION } = process.env;
const url = `${BASE}/agui/demo/`;

function recorder() {
  const types = [];
  return { types, subscriber: { onEvent: ({ event }) => { types.push(event.type); } } };
}

function assistantTexts(agent) {
  const texts = {};
  for (const m of agent.messages) if (m.role === "assistant" && typeof m.content === "string") texts[m.id] = m.content;
  return texts;
}

// C: read the watch stream as raw SSE (ids and data), optionally stopping after `limit` ids.
async function watch(lastEventId, limit) {
  const controller = new AbortController();
  const headers = { Authorization: `Bearer ${WATCH_TOKEN}`, Accept: "text/event-stream" };
  if (lastEventId !== null) headers["Last-Event-ID"] = String(lastEventId);
  const response = await fetch(`${BASE}/agui/sessions/${SESSION}/events`, { headers, signal: controller.signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const events = [];
  let buffer = "";
  let ids = 0;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!block.trim() || block.startsWith(":")) continue;
        const fields = Object.fromEntries(block.split("\n").map((line) => [line.slice(0, line.indexOf(": ")), line.slice(line.indexOf(": ") + 2)]));
        events.push({ id: fields.id ?? null, event: JSON.parse(fields.data) });
        if (fields.id !== undefined) ids += 1;
        if (limit && ids >= limit) {
          controller.abort();
          return events;
        }
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
  }
  return events;
}

const a = new HttpAgent({ url, headers: { Authorization: `Bearer ${TOKEN}` }, threadId: SESSION });
a.addMessage({ id: "u-1", role: "user", content: "Please focus on EMEA first." });
const b = new HttpAgent({ url, headers: { Authorization: `Bearer ${TOKEN}` }, threadId: SESSION });

const recA1 = recorder();
const recB = recorder();
let joined = null;
let watched = null;
const joinOnce = {
  onStepFinishedEvent: ({ event }) => {
    if (event.stepName === "brief" && joined === null) {
      joined = b.runAgent({}, recB.subscriber);
      // C starts watching now too: from the start of the log, cut after 25 ids.
      watched = (async () => {
        const first = await watch(0, 25);
        const lastId = [...first].reverse().find((e) => e.id !== null).id;
        const rest = await watch(Number(lastId), 0);
        return { first, rest, lastId };
      })();
    }
  },
};
await a.runAgent({}, { ...recA1.subscriber, ...joinOnce });
const interrupts = a.pendingInterrupts.map((i) => ({ id: i.id, reason: i.reason }));
await joined;
const recA2 = recorder();
await a.runAgent({ resume: a.pendingInterrupts.map((i) => ({ interruptId: i.id, status: "resolved", payload: { decision: "approve", comment: "ship it" } })) }, recA2.subscriber);
const c = await watched;

console.log(JSON.stringify({
  a: { first: recA1.types, second: recA2.types, interrupts, texts: assistantTexts(a), pending: a.pendingInterrupts.length },
  b: { types: recB.types, texts: assistantTexts(b) },
  c: { first: c.first, rest: c.rest, lastId: c.lastId },
}));
