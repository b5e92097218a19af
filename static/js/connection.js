// WebSocket connection manager: connect, heartbeat, dead-socket detection, reconnect with
// backoff, immediate reconnect for "too slow"/"idle" closes, final auth closes, resync, and
// wake-up on `online` / tab visible. Every dependency (WebSocket, timers, random, clock,
// window/document event targets) is injected so the module runs under `node --test`.
//
// States: "disconnected" | "connecting" | "connected" | "reconnecting".
// The attempt counter counts reconnects since the last *stable* connection (one that stayed
// open for `stableMs`); it is not reset by a mere open, so a server that accepts and then
// drops the socket straight away still runs into the backoff and, finally, the give-up.

import { BACKOFF_DEFAULTS, delayFor } from "./backoff.js";
import { CommandName } from "./vocabulary.js";

export const STATES = Object.freeze({
  DISCONNECTED: "disconnected",
  CONNECTING: "connecting",
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
});

/** Close codes after which reconnecting is pointless (not logged in / not allowed / no session). */
export const FINAL_CLOSE_CODES = Object.freeze([4401, 4403, 4404]);
/** Close codes after which the client reconnects at once (too slow: 4409, idle: 4408, rights
 * changed: 4412, for a snapshot with the new ones). */
export const IMMEDIATE_CLOSE_CODES = Object.freeze([4408, 4409, 4412]);
/** Close codes after which the reconnect asks for a fresh snapshot instead of a replay: a
 * replay carries the missed events but not the socket's rights (the snapshot's can_control). */
export const SNAPSHOT_CLOSE_CODES = Object.freeze([4412]);
/** Code the client uses when it closes a socket it considers dead or out of sync. */
export const CLIENT_RECYCLE_CODE = 4000;

export const CLOSE_MESSAGES = Object.freeze({
  4401: "You are not logged in.",
  4403: "You are not allowed to see this session.",
  4404: "This session does not exist.",
});

/** ws(s)://host/path[?last_seq=N] built from a Location-like object. */
export function buildSocketUrl(location, path, lastSeq = 0) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = Number.isInteger(lastSeq) && lastSeq > 0 ? `?last_seq=${lastSeq}` : "";
  return `${scheme}://${location.host}${path}${query}`;
}

export function sessionSocketPath(sessionId) {
  return `/ws/sessions/${encodeURIComponent(sessionId)}/`;
}

let idCounter = 0;
export function newCommandId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  idCounter += 1;
  return `c${Date.now().toString(36)}-${idCounter}-${Math.random().toString(36).slice(2, 10)}`;
}

const OPEN = 1;

export function createConnection({
  url,
  WebSocket: WebSocketImpl = globalThis.WebSocket,
  timers = globalThis,
  random = Math.random,
  now = () => Date.now(),
  heartbeatMs = 15000,
  deadAfterMs = 2 * heartbeatMs,
  connectTimeoutMs = 10000,
  stableMs = 10000,
  backoff = {},
  windowTarget = null,
  documentTarget = null,
  newId = newCommandId,
  heartbeatData = () => ({}),
  onMessage = () => {},
  onOpen = () => {},
  onStateChange = () => {},
} = {}) {
  if (typeof url !== "function") throw new TypeError("url must be a function returning the socket URL");
  const backoffOptions = { ...BACKOFF_DEFAULTS, ...backoff };
  const setT = (fn, ms) => timers.setTimeout(fn, ms);
  const clearT = (h) => h != null && timers.clearTimeout(h);
  const setI = (fn, ms) => timers.setInterval(fn, ms);
  const clearI = (h) => h != null && timers.clearInterval(h);

  let state = STATES.DISCONNECTED;
  let socket = null;
  let wanted = false; // connect() was asked for and no deliberate disconnect since
  let attempt = 0;
  let gaveUp = false;
  let finalCode = null;
  let lastClose = null;
  let lastFrameAt = 0;
  let nextRetryAt = null;
  let reconnectTimer = null;
  let heartbeatTimer = null;
  let connectTimer = null;
  let stableTimer = null;

  const info = () => ({
    state,
    attempt,
    maxAttempts: backoffOptions.maxAttempts,
    gaveUp,
    finalCode,
    finalMessage: finalCode ? CLOSE_MESSAGES[finalCode] || "Connection refused." : null,
    lastClose,
    nextRetryAt,
  });

  function setState(next) {
    state = next;
    onStateChange(info());
  }

  function clearSocketTimers() {
    clearI(heartbeatTimer);
    clearT(connectTimer);
    clearT(stableTimer);
    heartbeatTimer = connectTimer = stableTimer = null;
  }

  function clearAllTimers() {
    clearSocketTimers();
    clearT(reconnectTimer);
    reconnectTimer = null;
    nextRetryAt = null;
  }

  function detach(ws, code, reason) {
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }

  function openSocket() {
    clearAllTimers();
    let ws;
    try {
      ws = new WebSocketImpl(url({ fresh: SNAPSHOT_CLOSE_CODES.includes(lastClose?.code) }));
    } catch {
      socket = null;
      scheduleReconnect(false);
      return;
    }
    socket = ws;
    setState(attempt > 0 ? STATES.RECONNECTING : STATES.CONNECTING);
    ws.onopen = () => {
      if (socket !== ws) return;
      clearT(connectTimer);
      connectTimer = null;
      lastFrameAt = now();
      heartbeatTimer = setI(heartbeat, heartbeatMs);
      stableTimer = setT(() => {
        stableTimer = null;
        if (socket === ws && state === STATES.CONNECTED && (attempt !== 0 || gaveUp)) {
          attempt = 0;
          gaveUp = false;
          onStateChange(info());
        }
      }, stableMs);
      setState(STATES.CONNECTED);
      onOpen();
    };
    ws.onmessage = (event) => {
      if (socket !== ws) return;
      lastFrameAt = now();
      if (typeof event.data === "string") onMessage(event.data);
    };
    ws.onerror = () => {
      /* a close event always follows */
    };
    ws.onclose = (event) => {
      if (socket !== ws) return;
      handleClose(event.code, event.reason || "", Boolean(event.wasClean));
    };
    connectTimer = setT(() => {
      connectTimer = null;
      if (socket === ws && state !== STATES.CONNECTED) recycle(false, "connect timeout");
    }, connectTimeoutMs);
  }

  function handleClose(code, reason, wasClean) {
    clearSocketTimers();
    socket = null;
    lastClose = { code, reason, wasClean };
    if (!wanted) {
      setState(STATES.DISCONNECTED);
      return;
    }
    if (FINAL_CLOSE_CODES.includes(code)) {
      finalCode = code;
      wanted = false;
      setState(STATES.DISCONNECTED);
      return;
    }
    scheduleReconnect(IMMEDIATE_CLOSE_CODES.includes(code));
  }

  function scheduleReconnect(immediate) {
    clearAllTimers();
    attempt += 1;
    if (attempt > backoffOptions.maxAttempts) {
      attempt = backoffOptions.maxAttempts;
      gaveUp = true;
      setState(STATES.DISCONNECTED);
      return;
    }
    if (immediate) {
      openSocket();
      return;
    }
    const delay = delayFor(attempt, backoffOptions, random);
    nextRetryAt = now() + delay;
    reconnectTimer = setT(() => {
      reconnectTimer = null;
      openSocket();
    }, delay);
    setState(STATES.RECONNECTING);
  }

  /** Close the current socket without waiting for its close event, then reconnect. */
  function recycle(immediate, reason) {
    const ws = socket;
    socket = null;
    clearSocketTimers();
    detach(ws, CLIENT_RECYCLE_CODE, reason);
    lastClose = { code: CLIENT_RECYCLE_CODE, reason, wasClean: false };
    if (wanted) scheduleReconnect(immediate);
  }

  function heartbeat() {
    if (!socket || state !== STATES.CONNECTED) return;
    if (now() - lastFrameAt >= deadAfterMs) {
      recycle(false, "no frame received: socket considered dead");
      return;
    }
    send(CommandName.PING, heartbeatData());
  }

  function send(cmd, data = {}, id = newId()) {
    if (state !== STATES.CONNECTED || !socket || socket.readyState !== OPEN) return null;
    try {
      socket.send(JSON.stringify({ cmd, data: data ?? {}, id }));
    } catch {
      return null;
    }
    return id;
  }

  function wake() {
    if (!wanted || finalCode) return;
    if (state === STATES.CONNECTED || state === STATES.CONNECTING) return;
    if (socket) return; // a socket is already being opened
    if (gaveUp) {
      attempt = 0;
      gaveUp = false;
    }
    openSocket();
  }

  const onOnline = () => wake();
  const onVisibility = () => {
    if (!documentTarget || documentTarget.visibilityState === "visible") wake();
  };
  if (windowTarget) windowTarget.addEventListener("online", onOnline);
  if (documentTarget) documentTarget.addEventListener("visibilitychange", onVisibility);

  return {
    /** Connect (no-op while connecting or connected). */
    connect() {
      if (socket) return;
      wanted = true;
      if (reconnectTimer !== null) {
        openSocket();
        return;
      }
      attempt = 0;
      gaveUp = false;
      finalCode = null;
      openSocket();
    },
    /** Deliberate disconnect: closes the socket and cancels every pending timer. */
    disconnect() {
      wanted = false;
      const ws = socket;
      socket = null;
      clearAllTimers();
      detach(ws, 1000, "client disconnect");
      attempt = 0;
      gaveUp = false;
      setState(STATES.DISCONNECTED);
    },
    /** Manual retry after giving up: fresh attempt counter, connect now. */
    retry() {
      wanted = true;
      attempt = 0;
      gaveUp = false;
      finalCode = null;
      const ws = socket;
      socket = null;
      detach(ws, CLIENT_RECYCLE_CODE, "retry");
      openSocket();
    },
    /** Drop the socket and reconnect at once (the URL is rebuilt, e.g. with the new last_seq). */
    resync(reason = "resync") {
      if (!wanted) return;
      if (!socket) {
        wake();
        return;
      }
      recycle(true, reason);
    },
    /** Send a command; returns its id, or null when not connected (nothing is queued). */
    send,
    /** Same as an `online` event: reconnect now if a reconnect is pending or we gave up. */
    wake,
    /** Remove the window/document listeners and disconnect. */
    destroy() {
      if (windowTarget) windowTarget.removeEventListener("online", onOnline);
      if (documentTarget) documentTarget.removeEventListener("visibilitychange", onVisibility);
      this.disconnect();
    },
    get state() {
      return state;
    },
    get attempt() {
      return attempt;
    },
    get info() {
      return info();
    },
  };
}
