// Tool store: a pure reducer over the tool calls of the folded state (`tool_calls`, keyed by
// call id). It runs after the session reducer, so a call's start finds the message it sits in
// (and the text before it: `offset`). The fold rules are shared with the server
// (realtime/state.py; see tests/fixtures/protocol/scenarios).

import { EventName, MessageKind, ReviewDecision, ToolCallStatus } from "./vocabulary.js";

function lastAgentMessage(messages, nodeId) {
  for (let i = messages.length - 1; i >= 0; i -= 1) {
    const m = messages[i];
    if (m.kind === MessageKind.AGENT && m.node_id === nodeId) return m;
  }
  return null;
}

const setCall = (state, call) => ({ ...state, tool_calls: { ...state.tool_calls, [call.call_id]: call } });

/** Apply one logged envelope to the tool calls. Returns the same object when nothing changes. */
export function reduceTools(state, envelope) {
  const data = envelope.data || {};
  const ts = envelope.timestamp;
  if (envelope.event === EventName.TOOL_CALL_START) {
    const message = lastAgentMessage(state.messages, data.node_id);
    return setCall(state, {
      call_id: data.call_id,
      node_id: data.node_id,
      agent_id: data.agent_id,
      tool: data.tool,
      round: data.round,
      arguments: "",
      requires_approval: false,
      status: ToolCallStatus.STREAMING,
      result: null,
      error: null,
      duration_ms: null,
      message_key: message ? message.key : null,
      offset: message ? message.text.length : 0,
      started_at: ts,
      finished_at: null,
    });
  }
  const id = envelope.event === EventName.REVIEW_SUBMITTED ? data.tool_call_id : data.call_id;
  const call = id ? state.tool_calls[id] : undefined;
  if (!call) return state;
  switch (envelope.event) {
    case EventName.TOOL_CALL_ARGS:
      return setCall(state, { ...call, arguments: call.arguments + data.delta });
    case EventName.TOOL_CALL_END:
      return setCall(state, {
        ...call,
        arguments: data.arguments,
        requires_approval: data.requires_approval,
        status: data.requires_approval ? ToolCallStatus.WAITING_APPROVAL : ToolCallStatus.RUNNING,
      });
    case EventName.TOOL_CALL_RESULT:
      return setCall(state, {
        ...call,
        status: data.status,
        result: data.result,
        error: data.error,
        duration_ms: data.duration_ms,
        finished_at: ts,
      });
    case EventName.REVIEW_SUBMITTED:
      return data.decision === ReviewDecision.APPROVE ? setCall(state, { ...call, status: ToolCallStatus.RUNNING }) : state;
    default:
      return state;
  }
}

// --------------------------------------------------------------------------- selectors

/** The calls made in one message, in the order they were made. */
export function callsOfMessage(state, messageKey) {
  return Object.values(state.tool_calls || {}).filter((call) => call.message_key === messageKey);
}
