// The folded state of one session: both reducers composed, plus a tiny subscribable store.

import { emptyState, reduceRun } from "./run_store.js";
import { reduceSession } from "./session_store.js";

export { emptyState };

/** Fold one logged envelope into the state (pure). */
export function fold(state, envelope) {
  return reduceSession(reduceRun(state, envelope), envelope);
}

/** Fold a list of envelopes (pure). */
export function foldAll(state, envelopes) {
  return envelopes.reduce(fold, state);
}

/** Subscribable holder of the folded state; listeners get (state, envelope|null). */
export function createStore(initial = emptyState()) {
  let state = initial;
  const listeners = new Set();
  const notify = (envelope) => {
    for (const listener of listeners) listener(state, envelope);
  };
  return {
    getState: () => state,
    apply(envelope) {
      const next = fold(state, envelope);
      if (next !== state) {
        state = next;
        notify(envelope);
      }
      return state;
    },
    replace(next) {
      state = next;
      notify(null);
      return state;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
