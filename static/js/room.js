// Entry point of the meeting room page: reads the config from
// <script type="application/json" id="room-config">, subscribes the views to the room's store
// (rendering at most once per animation frame), connects at once, and exposes window.__room
// (read-only use) for browser tests.

import { createRoomCore } from "./room_core.js";
import { createHeaderView } from "./view_header.js";
import { createWorkflowView } from "./view_workflow.js";
import { createTranscriptView } from "./view_transcript.js";
import { createCostView } from "./view_cost.js";
import { createControlsView } from "./view_controls.js";
import { createReviewView } from "./view_review.js";
import { createToasts } from "./view_toasts.js";
import { createPeopleView } from "./view_people.js";

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

  const toasts = createToasts(root.querySelector("#toasts"));
  const core = createRoomCore({
    config,
    toast: (text, opts = {}) => toasts.show(text, { ...opts, timeoutMs: opts.kind === "info" ? 4000 : 7000 }),
    initialStatus: root.querySelector('[data-testid="status-badge"]')?.getAttribute("data-status") || null,
  });

  // ------------------------------------------------------------------ rendering (batched per frame)
  let frame = null;
  const views = [];
  function render() {
    frame = null;
    const model = { state: core.state, meta: core.meta, conn: core.conn, now: Date.now(), config };
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

  const currentUser = typeof config.user === "string" ? config.user : config.user?.username || null;
  const review = createReviewView(root, { onCommand: core.sendCommand, requestRender });
  const people = createPeopleView(root, { config, toast: (text, opts) => toasts.show(text, opts), requestRender });
  views.push(
    createHeaderView(root, { onRetry: () => core.connection.retry(), loginUrl: config.login_url || "/accounts/login/" }),
    createWorkflowView(root, { onOpenReview: () => review.open() }),
    createTranscriptView(root, { currentUser, onCommand: core.sendCommand }),
    createCostView(root),
    createControlsView(root, { onCommand: core.sendCommand, onOpenReview: () => review.open(), requestRender }),
    review,
    people,
  );
  core.store.subscribe(requestRender);
  core.store.subscribe((_state, change) => people.onChange(change));

  // Clocks (elapsed time, review countdown) tick once a second.
  window.setInterval(requestRender, 1000);

  // Leaving the page is a deliberate disconnect; coming back from the back/forward cache reconnects.
  window.addEventListener("pagehide", () => core.connection.disconnect());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) core.connection.connect();
  });

  window.__room = Object.freeze({
    get state() {
      return core.state;
    },
    get meta() {
      return core.meta;
    },
    get conn() {
      return core.conn;
    },
    router: core.router,
    connection: core.connection,
    store: core.store,
  });

  render();
  core.start(); // connect right away: the page has a session
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start, { once: true });
else start();
