// Router: takes server frames (text or parsed envelopes), unpacks `batch` frames, drops
// duplicates by seq, detects gaps and asks for a resync, and hands each frame on:
//   logged events (seq != null) -> store.apply(envelope)       (in seq order, exactly once)
//   snapshot                    -> store.hydrate(data)         (replaces the state)
//   presence                    -> store.setPresence(data)
//   replay_control              -> replayControl(data)         (a shared replay's leader moved)
//   ack, error replies          -> replies.handleReply(envelope) (the command client)
//   pong                        -> nowhere: the connection already counted it as a sign of life
// A gap (seq > lastSeq + 1) is never applied: resync(lastSeq) is called once; the connection
// then reconnects with ?last_seq=lastSeq and the server replays or sends a fresh snapshot.

import { EventName } from "./vocabulary.js";

export function createRouter({ store, replies, resync = () => {}, invalid = () => {}, lastSeq = 0, replayControl = () => {} }) {
  let last = lastSeq;
  let resyncPending = false;
  const stats = { applied: 0, duplicates: 0, gaps: 0, ephemeral: 0, invalid: 0 };

  function handleEphemeral(env) {
    stats.ephemeral += 1;
    if (env.event === EventName.PRESENCE) store.setPresence(env.data);
    else if (env.event === EventName.ACK || env.event === EventName.ERROR) replies.handleReply(env);
    else if (env.event === EventName.REPLAY_CONTROL) replayControl(env.data);
  }

  function handleEnvelope(env) {
    if (env === null || typeof env !== "object" || typeof env.event !== "string") {
      stats.invalid += 1;
      invalid(env);
      return;
    }
    if (env.event === EventName.BATCH) {
      const inner = env.data && Array.isArray(env.data.events) ? env.data.events : [];
      for (const item of inner) handleEnvelope(item);
      return;
    }
    if (env.event === EventName.SNAPSHOT) {
      const data = env.data || {};
      last = Number.isInteger(data.last_seq) ? data.last_seq : 0;
      resyncPending = false;
      store.hydrate(data);
      return;
    }
    if (env.seq === null || env.seq === undefined) {
      handleEphemeral(env);
      return;
    }
    const seq = env.seq;
    if (seq <= last) {
      stats.duplicates += 1;
      return;
    }
    if (seq > last + 1) {
      stats.gaps += 1;
      if (!resyncPending) {
        resyncPending = true;
        resync(last);
      }
      return;
    }
    last = seq;
    resyncPending = false;
    stats.applied += 1;
    store.apply(env);
  }

  return {
    /** Handle one frame: a JSON string or an already-parsed envelope. */
    handle(frame) {
      let env = frame;
      if (typeof frame === "string") {
        try {
          env = JSON.parse(frame);
        } catch {
          stats.invalid += 1;
          invalid(frame);
          return;
        }
      }
      handleEnvelope(env);
    },
    get lastSeq() {
      return last;
    },
    /** True between a detected gap and the next in-order event, snapshot or reconnect. */
    get resyncPending() {
      return resyncPending;
    },
    /** Call when a new socket opens: a new gap may then ask for a resync again. */
    connectionOpened() {
      resyncPending = false;
    },
    get stats() {
      return { ...stats };
    },
  };
}
