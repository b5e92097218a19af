// Entry point of the meeting room page: reads the config, wires connection -> router ->
// store -> views, connects at once, and exposes window.__room for browser tests.

import { buildSocketUrl, createConnection, sessionSocketPath } from "./connection.js";
import { createCommandClient } from "./commands.js";
import { createRouter } from "./router.js";
import { createStore, emptyState } from "./store.js";
import { createHeaderView } from "./view_header.js";
import { createWorkflowView } from "./view_workflow.js";
import { createTranscriptView } from "./view_transcript.js";
import { createCostView } from "./view_cost.js";
import { createControlsView } from "./view_controls.js";
import { createReviewView } from "./view_review.js";
import { createToasts } from "./view_toasts.js";

const ERROR_TEXT = {
  forbidden: "You may watch this session but not control it.",
  invalid_state: "That does not make sense in the session's current state.",
  rate_limited: "Too many commands at once; wait a moment.",
  not_found: "That node or review no longer exists.",
  invalid_data: "The server refused the input.",
  internal: "The server could not do this; nothing was changed.",
};
const COMMAND_LABELS = {
  start_session: "Start",
  pause_session: "Pause",
  resume_session: "Resume",
  stop_session: "Stop",
  user_input: "Send",
  submit_review: "Review",
};

function readConfig() {
  const el = document.getElementById("room-config");
  if (!el) return null;
  try {
    return JSON.parse(el.textContent);
  } catch {
    return null;
  }
}

function start() {
  const config = readConfig();
  if (!config || !config.session_id) return;
  const root = document.body;

  const store = createStore(emptyState());
  const meta = {
    session: { id: config.session_id, title: config.title || "", status: null },
    workflow: null,
    presence: { count: 0, users: [] },
    canControl: Boolean(config.can_control),
    hydrated: false,
    lastResyncAt: null,
  };
  const initialStatus = root.querySelector('[data-testid="status-badge"]')?.getAttribute("data-status");
  if (initialStatus) meta.session.status = initialStatus;
  let conn = { state: "disconnected", attempt: 0, gaveUp: false, finalCode: null };

  // ------------------------------------------------------------------ rendering
  let frame = null;
  const views = [];
  function render() {
    frame = null;
    const model = { state: store.getState(), meta, conn, now: Date.now(), config };
    for (const view of views) view.render(model);
  }
  function requestRender() {
    if (frame !== null) return;
    if (typeof window.requestAnimationFrame === "function" && !document.hidden) {
      frame = window.requestAnimationFrame(render);
    } else {
      frame = window.setTimeout(render, 50);
    }
  }

  // ------------------------------------------------------------------ plumbing
  const toasts = createToasts(root.querySelector("#toasts"));
  let connection = null;
  let commands = null;

  const router = createRouter({
    apply(envelope) {
      store.apply(envelope);
      meta.hydrated = true;
      requestRender();
    },
    snapshot(data) {
      if (data.session) meta.session = { ...meta.session, ...data.session };
      if (data.workflow) meta.workflow = data.workflow;
      if (data.presence) meta.presence = data.presence;
      if (typeof data.can_control === "boolean") meta.canControl = data.can_control;
      store.replace({ ...emptyState(), ...(data.state || {}) });
      if (data.resync && meta.hydrated) {
        toasts.show("You were too far behind; the room was refreshed from the server.", { kind: "info", timeoutMs: 4000 });
      }
      meta.hydrated = true;
      requestRender();
    },
    ephemeral(envelope) {
      switch (envelope.event) {
        case "presence":
          meta.presence = envelope.data;
          requestRender();
          break;
        case "ack":
          commands.handleReply(envelope);
          break;
        case "error":
          if (!commands.handleReply(envelope)) {
            toasts.show(envelope.data?.error || "The server reported an error.", { title: "Error" });
          }
          break;
        default:
          break; // pong: the connection already counted the frame
      }
    },
    resync() {
      meta.lastResyncAt = Date.now();
      connection.resync("gap in event sequence");
    },
  });

  connection = createConnection({
    url: () => buildSocketUrl(window.location, config.ws_path || sessionSocketPath(config.session_id), router.lastSeq),
    windowTarget: window,
    documentTarget: document,
    onMessage: (text) => router.handle(text),
    onOpen: () => router.connectionOpened(),
    onStateChange(info) {
      const wasConnected = conn.state === "connected";
      conn = info;
      if (wasConnected && info.state !== "connected") commands.connectionLost();
      requestRender();
    },
  });
  commands = createCommandClient({ connection });

  function sendCommand(cmd, data) {
    return commands.send(cmd, data).catch((err) => {
      const label = COMMAND_LABELS[cmd] || cmd;
      const text = err?.error || ERROR_TEXT[err?.code] || "Something went wrong.";
      toasts.show(text, { title: `${label} failed` });
      throw err;
    });
  }

  const review = createReviewView(root, { onCommand: sendCommand, requestRender });
  views.push(
    createHeaderView(root, { onRetry: () => connection.retry(), loginUrl: config.login_url || "/accounts/login/" }),
    createWorkflowView(root, { onOpenReview: () => review.open() }),
    createTranscriptView(root, { currentUser: typeof config.user === "string" ? config.user : config.user?.username || null }),
    createCostView(root),
    createControlsView(root, { onCommand: sendCommand, onOpenReview: () => review.open(), requestRender }),
    review,
  );

  // Clocks (elapsed time, review countdown) tick once a second.
  window.setInterval(requestRender, 1000);

  // Leaving the page is a deliberate disconnect; coming back from the back/forward cache reconnects.
  window.addEventListener("pagehide", () => connection.disconnect());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) connection.connect();
  });

  window.__room = Object.freeze({
    get state() {
      return store.getState();
    },
    get meta() {
      return meta;
    },
    router,
    connection,
    store,
  });

  render();
  connection.connect();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start, { once: true });
else start();
