// Session store: a pure reducer over the conversation part of the folded state (messages,
// streaming merge, token usage, cost over time, who belongs to the session and the log of
// member changes) plus small selectors.

import { EventName, FINAL_NODE_STATUSES, MessageKind } from "./vocabulary.js";
import { TOKEN_FIELDS } from "./run_store.js";

const has = (obj, key) => obj != null && Object.prototype.hasOwnProperty.call(obj, key);

function lastAgentMessageIndex(messages, nodeId) {
  for (let i = messages.length - 1; i >= 0; i -= 1) {
    const m = messages[i];
    if (m.kind === MessageKind.AGENT && m.node_id === nodeId) return i;
  }
  return -1;
}

function countNodeMessages(messages, nodeId) {
  let n = 0;
  for (const m of messages) if (m.node_id === nodeId) n += 1;
  return n;
}

/** A copy of `messages` in which the node's open message exists (created if needed). */
export function openAgentMessage(messages, nodeId, agentId, ts) {
  const copy = messages.slice();
  let index = lastAgentMessageIndex(copy, nodeId);
  if (index === -1 || copy[index].final) {
    copy.push({
      key: `${nodeId}#${countNodeMessages(copy, nodeId) + 1}`,
      kind: MessageKind.AGENT,
      node_id: nodeId,
      agent_id: agentId,
      user: null,
      text: "",
      thinking: "",
      final: false,
      started_at: ts,
    });
    index = copy.length - 1;
  }
  return { messages: copy, index };
}

/**
 * Apply one logged envelope to the session part of the state. Returns a new state object
 * (unchanged parts are shared) or the same object when the event does not concern it.
 */
export function reduceSession(state, envelope) {
  const data = envelope.data || {};
  const ts = envelope.timestamp;
  switch (envelope.event) {
    case EventName.TOKEN_STREAM: {
      const { messages, index } = openAgentMessage(state.messages, data.node_id, data.agent_id, ts);
      const current = messages[index];
      messages[index] = data.is_thinking
        ? { ...current, thinking: current.thinking + data.chunk }
        : { ...current, text: current.text + data.chunk };
      return { ...state, messages };
    }
    case EventName.TOOL_CALL_START: {
      // A call opens its node's message too (a model may call a tool before writing).
      const { messages, index } = openAgentMessage(state.messages, data.node_id, data.agent_id, ts);
      return messages.length !== state.messages.length && index >= 0 ? { ...state, messages } : state;
    }
    case EventName.NODE_STATE_CHANGE: {
      if (!FINAL_NODE_STATUSES.includes(data.status)) return state;
      const index = lastAgentMessageIndex(state.messages, data.node_id);
      if (index === -1 || state.messages[index].final) return state;
      const messages = state.messages.slice();
      messages[index] = { ...messages[index], final: true };
      return { ...state, messages };
    }
    case EventName.USER_MESSAGE:
      return {
        ...state,
        messages: [
          ...state.messages,
          {
            key: `user:${data.message_id}`,
            kind: MessageKind.USER,
            node_id: null,
            agent_id: null,
            user: data.user,
            text: data.text,
            thinking: "",
            final: true,
            started_at: ts,
          },
        ],
      };
    case EventName.TOKEN_USAGE: {
      // Token types an older event lacks are 0; a null node cost is "price unknown".
      const row = {
        agent_id: data.agent_id,
        model: data.model,
        ...Object.fromEntries(TOKEN_FIELDS.map((f) => [f, data[f] ?? 0])),
        cost_usd: data.estimated_cost_usd,
      };
      // A fork's copy of its parent's usage: listed and marked, not this session's spend.
      if (data.inherited) row.inherited = true;
      return {
        ...state,
        usage: {
          ...state.usage,
          nodes: { ...state.usage.nodes, [data.node_id]: row },
          ...Object.fromEntries(TOKEN_FIELDS.map((f) => [f, data[`session_${f}`] ?? 0])),
          cost_usd: data.session_cost_usd,
          price_unknown: data.session_price_unknown ?? false,
        },
        cost_series: data.inherited ? state.cost_series : [...state.cost_series, [ts, data.session_cost_usd]],
      };
    }
    case EventName.EXECUTION_COMPLETED: {
      const usage = { ...state.usage };
      for (const f of ["cost_usd", "price_unknown", ...TOKEN_FIELDS]) if (has(data, f)) usage[f] = data[f];
      return { ...state, usage };
    }
    case EventName.MEMBER_CHANGED: {
      const members = { ...state.members };
      if (data.role === null || data.role === undefined) delete members[data.user];
      else members[data.user] = data.role;
      const change = { user: data.user, role: data.role ?? null, previous: data.previous ?? null, by: data.by ?? null, link: data.link ?? null, at: ts };
      return { ...state, members, member_changes: [...state.member_changes, change] };
    }
    default:
      return state;
  }
}

// --------------------------------------------------------------------------- selectors

/** The message currently streaming for a node, if any. */
export function streamingMessage(state, nodeId) {
  const index = lastAgentMessageIndex(state.messages, nodeId);
  return index === -1 || state.messages[index].final ? null : state.messages[index];
}

/** Per-node usage rows in a stable order (the given node order first, then the rest). */
export function usageRows(state, nodeOrder = []) {
  const ids = Object.keys(state.usage.nodes);
  const order = new Map(nodeOrder.map((id, i) => [id, i]));
  ids.sort((a, b) => (order.get(a) ?? 1e9) - (order.get(b) ?? 1e9) || a.localeCompare(b));
  return ids.map((id) => ({ node_id: id, ...state.usage.nodes[id] }));
}
