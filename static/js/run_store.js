// Run store: a pure reducer over the run part of the folded state (execution status, node
// statuses, review requests and decisions, timing, error) plus selectors (counts, duration).
// The fold rules are shared with the server (see tests/fixtures/protocol/scenarios).

import {
  ACTIVE_SESSION_STATUSES,
  EventName,
  TokenType,
  FINAL_NODE_STATUSES,
  FINISHED_SESSION_STATUSES,
  NodeStatus,
  SessionStatus,
} from "./vocabulary.js";

/** `<type>_tokens` for every token type: the usage fields of events and of the folded state. */
export const TOKEN_FIELDS = Object.freeze(Object.values(TokenType).map((kind) => `${kind}_tokens`));

export function defaultNode() {
  return { status: NodeStatus.PENDING, agent_id: null, started_at: null, finished_at: null, error: null };
}

/** The folded state of a session nobody has started yet. */
export function emptyState() {
  return {
    status: SessionStatus.CREATED,
    nodes: {},
    messages: [],
    usage: { nodes: {}, ...Object.fromEntries(TOKEN_FIELDS.map((f) => [f, 0])), cost_usd: 0, price_unknown: false },
    cost_series: [],
    pending_review: null,
    reviews: [],
    tool_calls: {},
    started_at: null,
    finished_at: null,
    error: null,
    members: {},
    member_changes: [],
    budget: null,
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
    case EventName.NODE_STATE_CHANGE: {
      const id = data.node_id;
      const existing = state.nodes[id] || defaultNode();
      const status = data.status;
      const node = {
        ...existing,
        status,
        agent_id: given(data, "agent_id") ?? existing.agent_id,
        error: given(data, "error") ?? (status === NodeStatus.RUNNING ? null : existing.error),
      };
      if (data.inherited) node.inherited = true; // a fork's copy of its parent's node (not run here)
      else if (status === NodeStatus.RUNNING) delete node.inherited; // ... until it runs here
      if (status === NodeStatus.RUNNING) {
        if (node.started_at === null) node.started_at = ts;
        node.finished_at = null;
      }
      if (FINAL_NODE_STATUSES.includes(status)) node.finished_at = ts;
      return { ...state, nodes: { ...state.nodes, [id]: node } };
    }
    case EventName.EXECUTION_STARTED: {
      const nodes = { ...state.nodes };
      for (const id of data.nodes || []) {
        if (!has(nodes, id)) nodes[id] = defaultNode();
      }
      return { ...state, status: SessionStatus.RUNNING, started_at: state.started_at ?? ts, nodes };
    }
    case EventName.EXECUTION_PAUSED:
      return { ...state, status: SessionStatus.PAUSED };
    case EventName.EXECUTION_RESUMED:
      // A review still pending when the session was paused: back to waiting for it.
      return { ...state, status: state.pending_review ? SessionStatus.WAITING_REVIEW : SessionStatus.RUNNING };
    case EventName.NODE_RESUMED:
      return {
        ...state,
        status:
          state.status === SessionStatus.WAITING_REVIEW || state.status === SessionStatus.PAUSED
            ? SessionStatus.RUNNING
            : state.status,
        pending_review: null,
      };
    case EventName.EXECUTION_COMPLETED:
      return { ...state, status: SessionStatus.COMPLETED, finished_at: ts, pending_review: null };
    case EventName.EXECUTION_STOPPED:
      return { ...state, status: SessionStatus.STOPPED, finished_at: ts, pending_review: null };
    case EventName.EXECUTION_FAILED:
      return { ...state, status: SessionStatus.FAILED, finished_at: ts, error: data.error, pending_review: null };
    case EventName.ERROR:
      // Only logged errors reach the reducer (command replies have seq null and are toasts).
      if (envelope.seq === null || envelope.seq === undefined) return state;
      return { ...state, error: data.error };
    case EventName.HUMAN_INTERACTION_REQUIRED: {
      const timeout = given(data, "timeout");
      return {
        ...state,
        status: SessionStatus.WAITING_REVIEW,
        pending_review: {
          node_id: data.node_id,
          reason: data.reason,
          timeout,
          deadline: timeout ? addSeconds(ts, timeout) : null,
          reviewed_node_id: given(data, "reviewed_node_id"),
          round: given(data, "round") ?? 1,
          tool_call_id: given(data, "tool_call_id"),
          tool: given(data, "tool"),
          arguments: given(data, "arguments"),
          budget_usd: given(data, "budget_usd"),
          cost_usd: given(data, "cost_usd"),
        },
      };
    }
    case EventName.BUDGET_STATUS:
      return { ...state, budget: { budget_usd: data.budget_usd ?? null, cost_usd: data.cost_usd, state: data.state, at: ts } };
    case EventName.REVIEW_SUBMITTED:
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
            tool_call_id: given(data, "tool_call_id"),
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
  const counts = { total: ids.size, done: 0 };
  for (const status of Object.values(NodeStatus)) counts[status] = 0;
  for (const id of ids) {
    const status = (state.nodes[id] || defaultNode()).status;
    if (has(counts, status)) counts[status] += 1;
    if (FINAL_NODE_STATUSES.includes(status)) counts.done += 1;
  }
  return counts;
}

/** Ids of nodes currently running (the active branches). */
export function activeNodes(state) {
  return Object.keys(state.nodes).filter((id) => state.nodes[id].status === NodeStatus.RUNNING);
}

/** Run duration in ms: start to finish, or to `now` (ms since epoch) while still going. */
export function durationMs(state, now) {
  if (!state.started_at) return 0;
  const start = Date.parse(state.started_at);
  const end = state.finished_at ? Date.parse(state.finished_at) : now;
  return Math.max(0, end - start);
}

export function isFinished(state) {
  return FINISHED_SESSION_STATUSES.includes(state.status);
}

/** Which control commands make sense for this execution status. */
export function allowedControls(status) {
  return {
    start: status === SessionStatus.CREATED,
    pause: status === SessionStatus.RUNNING,
    resume: status === SessionStatus.PAUSED,
    stop: ACTIVE_SESSION_STATUSES.includes(status),
    input: !FINISHED_SESSION_STATUSES.includes(status),
  };
}
