// Replay: a recorded session played back through the room's one fold (store.js foldAll), no
// second implementation. Without the DOM (tested under node --test); view_timeline.js draws
// it and room.js wires it.
//
//   timeline  the logged envelopes as they arrive page by page, each with its place on a
//             compressed clock: a gap longer than IDLE_CAP_MS (a review wait, a pause) counts
//             as IDLE_CAP_MS and is remembered as an idle mark the scrubber shows.
//   player    the position (how many events are applied), the state there, play/pause at
//             1x, 4x, 16x or as fast as possible, seek, step, jump to a node's start. The
//             state at a position is the fold of the events before it; seeking back folds
//             from the nearest checkpoint (one kept every CHECKPOINT_EVERY events: states
//             are immutable and share their unchanged parts, so a checkpoint is cheap).

import { emptyState, fold } from "./store.js";
import { EventName, NodeStatus } from "./vocabulary.js";

export const IDLE_CAP_MS = 2000;
export const CHECKPOINT_EVERY = 1000;
/** 0: as fast as possible. */
export const SPEEDS = Object.freeze([1, 4, 16, 0]);
/** Events folded per animation frame at "as fast as possible" (and per seek slice). */
export const MAX_PER_FRAME = 4000;

export function createTimeline() {
  const events = [];
  const times = []; // compressed ms since the first event
  const idle = []; // {index, ms}: the event at index followed a gap of ms (recorded)
  const nodeStarts = new Map(); // node id -> index of its first "running"
  let lastRaw = null;
  return {
    events,
    times,
    idle,
    nodeStarts,
    get length() {
      return events.length;
    },
    get duration() {
      return times.length ? times[times.length - 1] : 0;
    },
    /** Append envelopes in seq order (a page of the log); returns how many were new. */
    append(envelopes) {
      let added = 0;
      for (const env of envelopes) {
        if (!env || typeof env.seq !== "number") continue;
        if (events.length && env.seq <= events[events.length - 1].seq) continue;
        const raw = Date.parse(env.timestamp);
        let t = 0;
        if (events.length) {
          const gap = Number.isNaN(raw) || lastRaw === null ? 0 : Math.max(0, raw - lastRaw);
          if (gap > IDLE_CAP_MS) idle.push({ index: events.length, ms: gap });
          t = times[times.length - 1] + Math.min(gap, IDLE_CAP_MS);
        }
        if (!Number.isNaN(raw)) lastRaw = raw;
        if (env.event === EventName.NODE_STATE_CHANGE && env.data?.status === NodeStatus.RUNNING) {
          if (!nodeStarts.has(env.data.node_id)) nodeStarts.set(env.data.node_id, events.length);
        }
        events.push(env);
        times.push(t);
        added += 1;
      }
      return added;
    },
    /** How many events have a seq <= seq (the position that shows the log "at seq"). */
    positionOfSeq(seq) {
      let lo = 0;
      let hi = events.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (events[mid].seq <= seq) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    },
    /** How many events are due at compressed time t. */
    positionAtTime(t) {
      let lo = 0;
      let hi = times.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (times[mid] <= t) lo = mid + 1;
        else hi = mid;
      }
      return lo;
    },
  };
}

/**
 * onChange(player) after every move. Positions count applied events: 0 is the empty room,
 * timeline.length the end of what has arrived.
 */
export function createPlayer({ timeline, onChange = () => {}, initial = emptyState() }) {
  let position = 0;
  let state = initial;
  let playing = false;
  let speed = 1;
  let clock = 0; // compressed ms of the playhead
  const checkpoints = [initial]; // checkpoints[k]: state after k * CHECKPOINT_EVERY events

  function forward(to) {
    const { events } = timeline;
    while (position < to) {
      state = fold(state, events[position]);
      position += 1;
      if (position % CHECKPOINT_EVERY === 0 && checkpoints.length === position / CHECKPOINT_EVERY) {
        checkpoints.push(state);
      }
    }
  }

  function moveTo(target) {
    const to = Math.max(0, Math.min(target, timeline.length));
    if (to < position) {
      const k = Math.min(Math.floor(to / CHECKPOINT_EVERY), checkpoints.length - 1);
      state = checkpoints[k];
      position = k * CHECKPOINT_EVERY;
    }
    forward(to);
    clock = position ? timeline.times[position - 1] : 0;
    return position;
  }

  const player = {
    get position() {
      return position;
    },
    get state() {
      return state;
    },
    get playing() {
      return playing;
    },
    get speed() {
      return speed;
    },
    /** The seq of the last applied event (0: none). */
    get seq() {
      return position ? timeline.events[position - 1].seq : 0;
    },
    /** The recorded time of the playhead: the header's clocks run on it. */
    get now() {
      const env = position ? timeline.events[position - 1] : timeline.events[0];
      return env ? Date.parse(env.timestamp) : Date.now();
    },
    get atEnd() {
      return position >= timeline.length;
    },
    seek(target) {
      moveTo(target);
      onChange(player);
      return position;
    },
    seekSeq(seq) {
      return player.seek(timeline.positionOfSeq(seq));
    },
    step(n = 1) {
      playing = false;
      return player.seek(position + n);
    },
    jumpToNode(nodeId) {
      const index = timeline.nodeStarts.get(nodeId);
      if (index === undefined) return null;
      return player.seek(index + 1); // its "running" applied: the node is shown starting
    },
    play() {
      playing = true;
      onChange(player);
    },
    pause() {
      playing = false;
      onChange(player);
    },
    setSpeed(value) {
      if (SPEEDS.includes(value)) speed = value;
      onChange(player);
    },
    /** Advance the playhead by dtMs of wall time; returns true if anything moved. */
    tick(dtMs) {
      if (!playing || position >= timeline.length) return false;
      const before = position;
      if (speed === 0) {
        moveTo(position + MAX_PER_FRAME);
      } else {
        clock += Math.max(0, dtMs) * speed;
        const due = timeline.positionAtTime(clock);
        if (due > position) {
          const keep = clock;
          moveTo(Math.min(due, position + MAX_PER_FRAME));
          clock = keep;
        }
      }
      if (position !== before) onChange(player);
      return position !== before;
    },
  };
  return player;
}

/**
 * Load the log page by page: fetchPage(after) -> {events, last_seq, next_after, done}.
 * onPage(events, page) after each page; resolves when done (or the log has no more).
 */
export async function loadPages({ fetchPage, onPage, after = 0 }) {
  let cursor = after;
  for (;;) {
    const page = await fetchPage(cursor);
    onPage(page.events, page);
    if (page.done || page.next_after <= cursor) return page;
    cursor = page.next_after;
  }
}
