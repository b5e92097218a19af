// The meeting room without the DOM. A server frame travels forward only:
//   connection.js  the socket's text (heartbeat, reconnect with backoff, resync)
//   -> router.js   unbatch, drop duplicates by seq, a gap asks the connection to resync
//   -> store.js    one fold (run_store + session_store); snapshot and presence set meta
//   -> views       room.js subscribes them to the store
// ack and error replies go router.js -> commands.js, which settles the pending command.
// room_core builds these pieces and wires them once; no frame passes through it. Kept apart
// from the DOM so the wiring, including "connect as soon as the page has a session", is
// tested under node --test.

import { buildSocketUrl, createConnection, sessionSocketPath, STATES } from "./connection.js";
import { CLIENT_ERROR_CODES, createCommandClient } from "./commands.js";
import { createRouter } from "./router.js";
import { createStore } from "./store.js";
import { CommandName, EventName } from "./vocabulary.js";

/** Fallback texts by error code, for a rejection that carries no text of its own. */
export const ERROR_TEXT = Object.freeze({
  forbidden: "You may watch this session but not control it.",
  invalid_state: "That does not make sense in the session's current state.",
  rate_limited: "Too many commands at once; wait a moment.",
  not_found: "That node or review no longer exists.",
  invalid_data: "The server refused the input.",
  internal: "The server could not do this; nothing was changed.",
  [CLIENT_ERROR_CODES.DISCONNECTED]: "Not connected.",
  [CLIENT_ERROR_CODES.TIMEOUT]: "The server did not answer in time.",
});

/** Every command a person sends (the heartbeat's ping is the connection's own). */
export const COMMAND_LABELS = Object.freeze({
  [CommandName.START_SESSION]: "Start",
  [CommandName.PAUSE_SESSION]: "Pause",
  [CommandName.RESUME_SESSION]: "Resume",
  [CommandName.STOP_SESSION]: "Stop",
  [CommandName.USER_INPUT]: "Send",
  [CommandName.SUBMIT_REVIEW]: "Review",
  [CommandName.REPLAY_CONTROL]: "Shared replay",
});

/**
 * config: the room_config JSON ({session_id, ws_path, user, can_control, title}).
 * toast(text, {kind, title}): show a message. The rest is injected for tests (defaults are
 * the browser's).
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
  toast = () => {},
  initialStatus = null,
  connectionOptions = {},
  lastSeq = 0, // a replay page connects after the log it replays: no snapshot, no backlog
  onReplayControl = () => {},
} = {}) {
  if (!config || !config.session_id) throw new Error("room config without session_id");
  const store = createStore({
    meta: {
      session: { id: config.session_id, title: config.title || "", status: initialStatus },
      canControl: Boolean(config.can_control),
    },
    conn: { state: STATES.DISCONNECTED, attempt: 0, gaveUp: false, finalCode: null, finalMessage: null },
  });

  // The connection's callbacks run only once connect() is called: `commands` and `router`
  // below exist by then.
  const connection = createConnection({
    // After 4412 (rights changed) no last_seq: the snapshot says what this user may do now.
    url: ({ fresh = false } = {}) =>
      buildSocketUrl(location, config.ws_path || sessionSocketPath(config.session_id), fresh ? 0 : router.lastSeq),
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
      if (store.getConn().state === STATES.CONNECTED && info.state !== STATES.CONNECTED) commands.connectionLost();
      store.setConn(info);
    },
    ...connectionOptions,
  });
  const commands = createCommandClient({
    connection,
    timers,
    onStrayError: (data) => toast(data.error || "The server reported an error.", { kind: "error", title: "Error" }),
  });
  const router = createRouter({
    store,
    replies: commands,
    resync: () => connection.resync("gap in the event sequence"),
    lastSeq,
    replayControl: (data) => onReplayControl(data),
  });

  store.subscribe((_state, change) => {
    if (change.event === EventName.SNAPSHOT && change.resync) {
      toast("You were too far behind; the room was refreshed from the server.", { kind: "info" });
    }
  });

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
    sendCommand,
    get meta() {
      return store.getMeta();
    },
    get conn() {
      return store.getConn();
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
