// The room's one store: the folded state of the session (both reducers composed, the same fold
// as the server's), the room facts a snapshot or presence frame brings (meta), and the
// connection's state (conn). The router and the connection write into it; views subscribe.

import { EventName } from "./vocabulary.js";
import { emptyState, reduceRun } from "./run_store.js";
import { reduceSession } from "./session_store.js";
import { reduceTools } from "./tool_store.js";

export { emptyState };

/** Fold one logged envelope into the state (pure). */
export function fold(state, envelope) {
  return reduceTools(reduceSession(reduceRun(state, envelope), envelope), envelope);
}

/** Fold a list of envelopes (pure). */
export function foldAll(state, envelopes) {
  return envelopes.reduce(fold, state);
}

const EMPTY_META = Object.freeze({
  session: null,
  workflow: null,
  presence: { count: 0, users: [] },
  canControl: false,
  hydrated: false, // a snapshot arrived
});

/**
 * Listeners get (state, change): the logged envelope folded in; {event: "snapshot", resync}
 * after a snapshot (resync: it refreshed a room already shown); {event: "presence"}; or
 * {event: "connection"}. Folding an event that changes nothing notifies nobody.
 */
export function createStore({ state: initial = emptyState(), meta: initialMeta = {}, conn: initialConn = null } = {}) {
  let state = initial;
  let meta = { ...EMPTY_META, ...initialMeta };
  let conn = initialConn;
  const listeners = new Set();
  const notify = (change) => {
    for (const listener of listeners) listener(state, change);
  };
  return {
    getState: () => state,
    getMeta: () => meta,
    getConn: () => conn,
    /** Fold one logged envelope. */
    apply(envelope) {
      const next = fold(state, envelope);
      if (next !== state) {
        state = next;
        notify(envelope);
      }
      return state;
    },
    /** A snapshot frame's data: replaces the state and takes the room facts it carries. */
    hydrate(data) {
      const resync = Boolean(data.resync && meta.hydrated);
      meta = {
        ...meta,
        session: data.session ? { ...meta.session, ...data.session } : meta.session,
        workflow: data.workflow || meta.workflow,
        presence: data.presence || meta.presence,
        canControl: typeof data.can_control === "boolean" ? data.can_control : meta.canControl,
        hydrated: true,
      };
      state = { ...emptyState(), ...(data.state || {}) };
      notify({ event: EventName.SNAPSHOT, resync });
    },
    /** A state folded elsewhere (the replay's playhead): shown as it is. */
    replace(next) {
      if (next === state) return;
      state = next;
      notify({ event: "replay" });
    },
    setPresence(presence) {
      meta = { ...meta, presence };
      notify({ event: EventName.PRESENCE });
    },
    setConn(info) {
      conn = info;
      notify({ event: "connection" });
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
