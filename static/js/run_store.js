// Run store: a pure reducer over the run part of the folded state (execution status, node
// statuses, review requests and decisions, timing, error) plus selectors (counts, duration).
// The fold rules are shared with the server (see tests/fixtures/protocol/scenarios).

export const TERMINAL_NODE_STATUSES = Object.freeze(["completed", "failed", "skipped", "stopped"]);
export const FINISHED_RUN_STATUSES = Object.freeze(["completed", "failed", "stopped"]);

export function defaultNode() {
  return { status: "pending", agent_id: null, started_at: null, finished_at: null, error: null };
}

/** The folded state of a session nobody has started yet. */
export function emptyState() {
  return {
    status: "created",
    nodes: {},
    messages: [],
    usage: { nodes: {}, input_tokens: 0, output_tokens: 0, cost_usd: 0 },
    cost_series: [],
    pending_review: null,
    reviews: [],
    started_at: null,
    finished_at: null,
    error: null,
  };
}

function addSeconds(iso, seconds) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return null;
  return new Date(ms + seconds * 1000).toISOString();
}

const has = (obj, key) => obj != null && Object.prototype.hasOwnProperty.call(obj, key);
const given = (data, key) => (has(data, key) && data[key] !== null && data[key] !== undefined ? data[key] : null);

/**
 * Apply one logged envelope to the run part of the state. Returns a new state object
 * (unchanged parts are shared) or the same object when the event does not concern the run.
 */
export function reduceRun(state, envelope) {
  const data = envelope.data || {};
  const ts = envelope.timestamp;
  switch (envelope.event) {
    case "node_state_change": {
      const id = data.node_id;
      const existing = state.nodes[id] || defaultNode();
      const status = data.status;
      const node = {
        ...existing,
        status,
        agent_id: given(data, "agent_id") ?? existing.agent_id,
        error: given(data, "error") ?? (status === "running" ? null : existing.error),
      };
      if (status === "running") {
        if (node.started_at === null) node.started_at = ts;
        node.finished_at = null;
      }
      if (TERMINAL_NODE_STATUSES.includes(status)) node.finished_at = ts;
      return { ...state, nodes: { ...state.nodes, [id]: node } };
    }
    case "execution:started": {
      const nodes = { ...state.nodes };
      for (const id of data.nodes || []) {
        if (!has(nodes, id)) nodes[id] = defaultNode();
      }
      return { ...state, status: "running", started_at: state.started_at ?? ts, nodes };
    }
    case "execution:paused":
      return { ...state, status: "paused" };
    case "execution:resumed":
      // A review still pending when the session was paused: back to waiting for it.
      return { ...state, status: state.pending_review ? "waiting_review" : "running" };
    case "node_resumed":
      return {
        ...state,
        status: state.status === "waiting_review" || state.status === "paused" ? "running" : state.status,
        pending_review: null,
      };
    case "execution:completed":
      return { ...state, status: "completed", finished_at: ts, pending_review: null };
    case "execution:stopped":
      return { ...state, status: "stopped", finished_at: ts, pending_review: null };
    case "execution:failed":
      return { ...state, status: "failed", finished_at: ts, error: data.error, pending_review: null };
    case "error":
      // Only logged errors reach the reducer (command replies have seq null and are toasts).
      if (envelope.seq === null || envelope.seq === undefined) return state;
      return { ...state, error: data.error };
    case "human_interaction_required": {
      const timeout = given(data, "timeout");
      return {
        ...state,
        status: "waiting_review",
        pending_review: {
          node_id: data.node_id,
          reason: data.reason,
          timeout,
          deadline: timeout ? addSeconds(ts, timeout) : null,
          reviewed_node_id: given(data, "reviewed_node_id"),
          round: given(data, "round") ?? 1,
        },
      };
    }
    case "review_submitted":
      return {
        ...state,
        reviews: [
          ...state.reviews,
          {
            node_id: data.node_id,
            decision: data.decision,
            comment: data.comment,
            by: data.by,
            timed_out: data.timed_out,
            at: ts,
          },
        ],
        pending_review: null,
      };
    default:
      return state;
  }
}

// --------------------------------------------------------------------------- selectors

/** Node counts by status; `done` counts every node that has finished one way or another. */
export function nodeCounts(state, workflowNodeIds = []) {
  const ids = new Set([...workflowNodeIds, ...Object.keys(state.nodes)]);
  const counts = {
    total: ids.size,
    pending: 0,
    running: 0,
    paused: 0,
    waiting_review: 0,
    completed: 0,
    failed: 0,
    skipped: 0,
    stopped: 0,
    done: 0,
  };
  for (const id of ids) {
    const status = (state.nodes[id] || defaultNode()).status;
    if (has(counts, status)) counts[status] += 1;
    if (TERMINAL_NODE_STATUSES.includes(status)) counts.done += 1;
  }
  return counts;
}

/** Ids of nodes currently running (the active branches). */
export function activeNodes(state) {
  return Object.keys(state.nodes).filter((id) => state.nodes[id].status === "running");
}

/** Run duration in ms: start to finish, or to `now` (ms since epoch) while still going. */
export function durationMs(state, now) {
  if (!state.started_at) return 0;
  const start = Date.parse(state.started_at);
  const end = state.finished_at ? Date.parse(state.finished_at) : now;
  return Math.max(0, end - start);
}

export function isFinished(state) {
  return FINISHED_RUN_STATUSES.includes(state.status);
}

/** Which control commands make sense for this execution status. */
export function allowedControls(status) {
  return {
    start: status === "created",
    pause: status === "running",
    resume: status === "paused",
    stop: status === "running" || status === "paused" || status === "waiting_review",
    input: !FINISHED_RUN_STATUSES.includes(status),
  };
}
