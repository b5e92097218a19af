// The meeting room without the DOM: store + router + connection + command client + the
// non-folded room facts (session, workflow, presence, can_control). room.js adds the views.
// Kept separate so the wiring, including "connect as soon as the page has a session",
// is tested under node --test.

import { buildSocketUrl, createConnection, sessionSocketPath } from "./connection.js";
import { createCommandClient } from "./commands.js";
import { createRouter } from "./router.js";
import { createStore, emptyState } from "./store.js";

export const ERROR_TEXT = Object.freeze({
  forbidden: "You may watch this session but not control it.",
  invalid_state: "That does not make sense in the session's current state.",
  rate_limited: "Too many commands at once; wait a moment.",
  not_found: "That node or review no longer exists.",
  invalid_data: "The server refused the input.",
  internal: "The server could not do this; nothing was changed.",
  disconnected: "Not connected.",
  timeout: "The server did not answer in time.",
});

export const COMMAND_LABELS = Object.freeze({
  start_session: "Start",
  pause_session: "Pause",
  resume_session: "Resume",
  stop_session: "Stop",
  user_input: "Send",
  submit_review: "Review",
});

/**
 * config: the room_config JSON ({session_id, ws_path, user, can_control, title}).
 * notify(): something changed, re-render. toast(text, {kind, title}): show a message.
 * The rest is injected for tests (defaults are the browser's).
 */
export function createRoomCore({
  config,
  location = globalThis.location,
  WebSocket = globalThis.WebSocket,
  timers = globalThis,
  random = Math.random,
  now = () => Date.now(),
  windowTarget = globalThis.window || null,
  documentTarget = globalThis.document || null,
  notify = () => {},
  toast = () => {},
  initialStatus = null,
  connectionOptions = {},
} = {}) {
  if (!config || !config.session_id) throw new Error("room config without session_id");
  const store = createStore(emptyState());
  const meta = {
    session: { id: config.session_id, title: config.title || "", status: initialStatus },
    workflow: null,
    presence: { count: 0, users: [] },
    canControl: Boolean(config.can_control),
    hydrated: false,
  };
  let conn = { state: "disconnected", attempt: 0, gaveUp: false, finalCode: null, finalMessage: null };
  let connection = null;
  let commands = null;

  const router = createRouter({
    apply(envelope) {
      store.apply(envelope);
      meta.hydrated = true;
      notify();
    },
    snapshot(data) {
      if (data.session) meta.session = { ...meta.session, ...data.session };
      if (data.workflow) meta.workflow = data.workflow;
      if (data.presence) meta.presence = data.presence;
      if (typeof data.can_control === "boolean") meta.canControl = data.can_control;
      const wasHydrated = meta.hydrated;
      meta.hydrated = true;
      store.replace({ ...emptyState(), ...(data.state || {}) });
      if (data.resync && wasHydrated) {
        toast("You were too far behind; the room was refreshed from the server.", { kind: "info" });
      }
      notify();
    },
    ephemeral(envelope) {
      if (envelope.event === "presence") {
        meta.presence = envelope.data;
        notify();
      } else if (envelope.event === "ack") {
        commands.handleReply(envelope);
      } else if (envelope.event === "error") {
        if (!commands.handleReply(envelope)) {
          toast(envelope.data?.error || "The server reported an error.", { kind: "error", title: "Error" });
        }
      }
      // pong: the connection already counted the frame as a sign of life.
    },
    resync() {
      connection.resync("gap in the event sequence");
    },
  });

  connection = createConnection({
    url: () => buildSocketUrl(location, config.ws_path || sessionSocketPath(config.session_id), router.lastSeq),
    // The server closes 4409 a socket whose unacknowledged events pass its send buffer.
    heartbeatData: () => ({ last_seq: router.lastSeq }),
    WebSocket,
    timers,
    random,
    now,
    windowTarget,
    documentTarget,
    onMessage: (text) => router.handle(text),
    onOpen: () => router.connectionOpened(),
    onStateChange(info) {
      const wasConnected = conn.state === "connected";
      conn = info;
      if (wasConnected && info.state !== "connected") commands.connectionLost();
      notify();
    },
    ...connectionOptions,
  });
  commands = createCommandClient({ connection, timers });

  /** Send a command; errors are shown as a toast and re-thrown for the caller. */
  function sendCommand(cmd, data = {}) {
    return commands.send(cmd, data).catch((err) => {
      const label = COMMAND_LABELS[cmd] || cmd;
      const text = err?.error || ERROR_TEXT[err?.code] || "Something went wrong.";
      toast(text, { kind: "error", title: `${label} failed` });
      throw err;
    });
  }

  return {
    store,
    router,
    connection,
    commands,
    meta,
    sendCommand,
    get conn() {
      return conn;
    },
    get state() {
      return store.getState();
    },
    /** Connect now: the page calls this on load whenever it has a session. */
    start() {
      connection.connect();
    },
  };
}
