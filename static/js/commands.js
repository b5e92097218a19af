// Command client: sends commands through the connection and pairs the server's replies
// (`ack` {id, cmd, duplicate} or `error` {code, error, id} with seq null) with them.
// send() returns a Promise that resolves with the ack data and rejects with
// {code, error, cmd}; code "disconnected" when not connected (nothing is queued) or when
// the connection dropped before the reply, code "timeout" when no reply came in time.

export function createCommandClient({ connection, timers = globalThis, timeoutMs = 15000 } = {}) {
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
        return Promise.reject({ code: "disconnected", error: "Not connected: the command was not sent.", cmd });
      }
      return new Promise((resolve, reject) => {
        const timer = timers.setTimeout(() => {
          settle(id, false, { code: "timeout", error: "The server did not answer in time." });
        }, timeoutMs);
        pending.set(id, { cmd, resolve, reject, timer });
      });
    },
    /**
     * Offer an ephemeral envelope. Returns true when it was the reply to a pending command
     * (ack or error with a known id); false otherwise (e.g. an error reply to nobody).
     */
    handleReply(envelope) {
      const data = envelope.data || {};
      if (envelope.event === "ack") return settle(data.id, true, data);
      if (envelope.event === "error") {
        return data.id != null && settle(data.id, false, { code: data.code || "error", error: data.error });
      }
      return false;
    },
    /** The connection went away: no reply will come for what is pending. */
    connectionLost() {
      for (const id of [...pending.keys()]) {
        settle(id, false, {
          code: "disconnected",
          error: "The connection dropped before the server answered; check whether it took effect.",
        });
      }
    },
    get pendingCount() {
      return pending.size;
    },
  };
}
