// Entry point of the meeting room page: reads the config from
// <script type="application/json" id="room-config">, subscribes the views to the room's store
// (rendering at most once per animation frame), connects at once, and exposes window.__room
// (read-only use) for browser tests. With `replay` in the config the same views render a
// replay's playhead (replay_room.js) instead of the live state, and a timeline replaces the
// run controls; the socket then only carries presence and the shared replay.

import { createRoomCore } from "./room_core.js";
import { createHeaderView } from "./view_header.js";
import { createWorkflowView } from "./view_workflow.js";
import { createTranscriptView } from "./view_transcript.js";
import { createCostView } from "./view_cost.js";
import { createControlsView } from "./view_controls.js";
import { createReviewView } from "./view_review.js";
import { createToasts } from "./view_toasts.js";
import { createPeopleView } from "./view_people.js";
import { createReplayRoom } from "./replay_room.js";
import { createTimelineView } from "./view_timeline.js";
import { byTestId, h } from "./dom.js";

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
  const toast = (text, opts = {}) => toasts.show(text, { ...opts, timeoutMs: opts.kind === "info" ? 4000 : 7000 });
  let replay = null;
  const sharedNotice = byTestId(root, "shared-notice");
  const core = createRoomCore({
    config,
    toast,
    initialStatus: root.querySelector('[data-testid="status-badge"]')?.getAttribute("data-status") || null,
    lastSeq: config.replay ? config.replay.last_seq : 0,
    onReplayControl(data) {
      if (replay) replay.onShared(data);
      else showSharedNotice(data);
    },
  });

  /** The live room hears of a shared replay: offer to join it. */
  function showSharedNotice(data) {
    sharedNotice.hidden = !data.active;
    if (!data.active) return;
    sharedNotice.replaceChildren(
      h("span", {}, `${data.by} started a shared replay of this meeting. `),
      h("a", { href: `${config.replay_url}?follow=1`, "data-testid": "join-shared" }, "Watch together"),
    );
  }

  // ------------------------------------------------------------------ rendering (batched per frame)
  let frame = null;
  const views = [];
  function render() {
    frame = null;
    const model = replay
      ? {
          state: replay.store.getState(),
          meta: { ...replay.store.getMeta(), presence: core.meta.presence },
          conn: core.conn,
          now: replay.player.now,
          config,
          replay: replay.view,
        }
      : { state: core.state, meta: core.meta, conn: core.conn, now: Date.now(), config };
    for (const view of views) view.render(model);
    if (replay) replay.rendered();
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
  const people = createPeopleView(root, { config, toast: (text, opts) => toasts.show(text, opts), requestRender });
  const forkUrl = config.can_control ? config.fork_url : null;
  views.push(createHeaderView(root, { onRetry: () => core.connection.retry(), loginUrl: config.login_url || "/accounts/login/" }));
  if (config.replay) {
    replay = createReplayRoom({ config, core, requestRender, toast });
    replay.store.subscribe(requestRender);
    views.push(
      createWorkflowView(root, { forkUrl }),
      createTranscriptView(root, { currentUser, onCommand: () => Promise.reject(new Error("a replay is read-only")) }),
      createCostView(root),
      createTimelineView(root, { actions: replay.actions }),
      people,
    );
  } else {
    const review = createReviewView(root, { onCommand: core.sendCommand, requestRender });
    views.push(
      createWorkflowView(root, { onOpenReview: () => review.open(), forkUrl }),
      createTranscriptView(root, { currentUser, onCommand: core.sendCommand }),
      createCostView(root),
      createControlsView(root, { onCommand: core.sendCommand, onOpenReview: () => review.open(), requestRender }),
      review,
      people,
    );
  }
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
    replay,
  });

  render();
  core.start(); // connect right away: the page has a session
  if (replay) replay.start();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start, { once: true });
else start();
