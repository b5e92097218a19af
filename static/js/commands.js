// Command client: sends commands through the connection and pairs the server's replies
// (`ack` {id, cmd, duplicate} or `error` {code, error, id} with seq null), which the router
// hands it, with them. send() returns a Promise that resolves with the ack data and rejects
// with {code, error, cmd}; code "disconnected" when not connected (nothing is queued) or when
// the connection dropped before the reply, code "timeout" when no reply came in time. An
// error reply no pending command claims goes to onStrayError(data).

import { EventName } from "./vocabulary.js";

/** Codes of the rejections the client makes itself (the server's are ERROR_CODES). */
export const CLIENT_ERROR_CODES = Object.freeze({ DISCONNECTED: "disconnected", TIMEOUT: "timeout" });

export function createCommandClient({ connection, timers = globalThis, timeoutMs = 15000, onStrayError = () => {} } = {}) {
  const pending = new Map();

  function settle(id, ok, value) {
    const entry = pending.get(id);
    if (!entry) return false;
    pending.delete(id);
    timers.clearTimeout(entry.timer);
    if (ok) entry.resolve(value);
    else entry.reject({ ...value, cmd: entry.cmd });
    return true;
  }

  return {
    send(cmd, data = {}) {
      const id = connection.send(cmd, data);
      if (id === null) {
        return Promise.reject({ code: CLIENT_ERROR_CODES.DISCONNECTED, error: "Not connected: the command was not sent.", cmd });
      }
      return new Promise((resolve, reject) => {
        const timer = timers.setTimeout(() => {
          settle(id, false, { code: CLIENT_ERROR_CODES.TIMEOUT, error: "The server did not answer in time." });
        }, timeoutMs);
        pending.set(id, { cmd, resolve, reject, timer });
      });
    },
    /**
     * Take an ephemeral ack or error. Returns true when it was the reply to a pending command
     * (ack or error with a known id); false otherwise (an error to nobody goes to onStrayError).
     */
    handleReply(envelope) {
      const data = envelope.data || {};
      if (envelope.event === EventName.ACK) return settle(data.id, true, data);
      if (envelope.event !== EventName.ERROR) return false;
      if (data.id != null && settle(data.id, false, { code: data.code || "error", error: data.error })) return true;
      onStrayError(data);
      return false;
    },
    /** The connection went away: no reply will come for what is pending. */
    connectionLost() {
      for (const id of [...pending.keys()]) {
        settle(id, false, {
          code: CLIENT_ERROR_CODES.DISCONNECTED,
          error: "The connection dropped before the server answered; check whether it took effect.",
        });
      }
    },
    get pendingCount() {
      return pending.size;
    },
  };
}
