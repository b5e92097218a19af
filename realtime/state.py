"""Fold logged events into the room state a snapshot carries.

The browser's stores apply the same rules to live events (static/js/session_store.js and
run_store.js); the shared scenarios in tests/fixtures/protocol/scenarios keep the two equal.
Building the snapshot from the log itself (not from the rows written at node boundaries)
makes it exactly consistent with its ``last_seq``: the events after it complete it. The one
exception is ``members`` (user -> role), which a snapshot takes from the room backend as it is
when the snapshot is made (members let in before ``member_changed`` existed have no event);
the events after it re-apply idempotently.
"""

from __future__ import annotations

import copy
from typing import Any

from realtime.protocol import TOKEN_FIELDS
from realtime.timestamps import plus_seconds
from realtime.vocabulary import (
    FINAL_NODE_STATUSES,
    EventName,
    MessageKind,
    NodeStatus,
    ReviewDecision,
    SessionStatus,
    ToolCallStatus,
)


def empty_state() -> dict[str, Any]:
    return {
        "status": SessionStatus.CREATED.value,
        "nodes": {},
        "messages": [],
        "usage": {"nodes": {}, **dict.fromkeys(TOKEN_FIELDS, 0), "cost_usd": 0,
                  "price_unknown": False},
        "cost_series": [],
        "pending_review": None,
        "reviews": [],
        "tool_calls": {},
        "started_at": None,
        "finished_at": None,
        "error": None,
        "members": {},
        "member_changes": [],
        "budget": None,
    }


def _default_node() -> dict[str, Any]:
    return {
        "status": NodeStatus.PENDING.value,
        "agent_id": None,
        "started_at": None,
        "finished_at": None,
        "error": None,
    }


def _last_agent_message(state: dict[str, Any], node_id: str) -> dict[str, Any] | None:
    for message in reversed(state["messages"]):
        if message["kind"] == MessageKind.AGENT and message["node_id"] == node_id:
            return message
    return None


def _open_agent_message(state: dict[str, Any], node_id: str, agent_id: str, ts: str) -> dict[str, Any]:
    """The node's message being written, or a new one (its first token or tool call)."""
    message = _last_agent_message(state, node_id)
    if message is None or message["final"]:
        count = sum(
            1 for m in state["messages"] if m["kind"] == MessageKind.AGENT and m["node_id"] == node_id
        )
        message = {
            "key": f"{node_id}#{count + 1}",
            "kind": MessageKind.AGENT.value,
            "node_id": node_id,
            "agent_id": agent_id,
            "user": None,
            "text": "",
            "thinking": "",
            "final": False,
            "started_at": ts,
        }
        state["messages"].append(message)
    return message


def _apply_tool_call(state: dict[str, Any], name: str, data: dict[str, Any], ts: str) -> None:
    """A tool call's events: it is placed in its node's message at the text it followed."""
    calls = state["tool_calls"]
    if name == EventName.TOOL_CALL_START:
        message = _open_agent_message(state, data["node_id"], data["agent_id"], ts)
        calls[data["call_id"]] = {
            "call_id": data["call_id"],
            "node_id": data["node_id"],
            "agent_id": data["agent_id"],
            "tool": data["tool"],
            "round": data["round"],
            "arguments": "",
            "requires_approval": False,
            "status": ToolCallStatus.STREAMING.value,
            "result": None,
            "error": None,
            "duration_ms": None,
            "message_key": message["key"],
            "offset": len(message["text"]),
            "started_at": ts,
            "finished_at": None,
        }
        return
    call = calls.get(data["call_id"])
    if call is None:  # its start is older than the snapshot the state came from
        return
    if name == EventName.TOOL_CALL_ARGS:
        call["arguments"] += data["delta"]
    elif name == EventName.TOOL_CALL_END:
        call["arguments"] = data["arguments"]
        call["requires_approval"] = data["requires_approval"]
        call["status"] = (
            ToolCallStatus.WAITING_APPROVAL if data["requires_approval"] else ToolCallStatus.RUNNING
        ).value
    elif name == EventName.TOOL_CALL_RESULT:
        call["status"] = data["status"]
        call["result"] = data["result"]
        call["error"] = data["error"]
        call["duration_ms"] = data["duration_ms"]
        call["finished_at"] = ts


TOOL_CALL_EVENTS = frozenset({
    EventName.TOOL_CALL_START, EventName.TOOL_CALL_ARGS, EventName.TOOL_CALL_END,
    EventName.TOOL_CALL_RESULT,
})


def _finish(state: dict[str, Any], status: str, timestamp: str) -> None:
    state["status"] = status
    state["finished_at"] = timestamp
    state["pending_review"] = None


def apply(state: dict[str, Any], envelope: dict[str, Any]) -> None:
    """Apply one logged event in place (events with seq null are not state)."""
    name = envelope["event"]
    data = envelope["data"]
    ts = envelope["timestamp"]
    if name == EventName.TOKEN_STREAM:
        message = _open_agent_message(state, data["node_id"], data["agent_id"], ts)
        if data["is_thinking"]:
            message["thinking"] += data["chunk"]
        else:
            message["text"] += data["chunk"]
    elif name in TOOL_CALL_EVENTS:
        _apply_tool_call(state, name, data, ts)
    elif name == EventName.NODE_STATE_CHANGE:
        node_id = data["node_id"]
        node = {**_default_node(), **state["nodes"].get(node_id, {})}
        status = data["status"]
        node["status"] = status
        if data.get("agent_id") is not None:
            node["agent_id"] = data["agent_id"]
        if data.get("inherited"):
            node["inherited"] = True  # a fork's copy of its parent's node (not run here)
        elif status == NodeStatus.RUNNING:
            node.pop("inherited", None)  # ... until something sends it back to run here
        if data.get("error") is not None:
            node["error"] = data["error"]
        elif status == NodeStatus.RUNNING:
            node["error"] = None
        if status == NodeStatus.RUNNING:
            if node["started_at"] is None:
                node["started_at"] = ts
            node["finished_at"] = None
        if status in FINAL_NODE_STATUSES:
            node["finished_at"] = ts
            message = _last_agent_message(state, node_id)
            if message is not None:
                message["final"] = True
        state["nodes"][node_id] = node
    elif name == EventName.TOKEN_USAGE:
        # Token types an older event lacks are 0; a null node cost is "price unknown".
        usage = state["usage"]
        row = {
            "agent_id": data["agent_id"],
            "model": data["model"],
            **{field: data.get(field, 0) for field in TOKEN_FIELDS},
            "cost_usd": data["estimated_cost_usd"],
        }
        for field in TOKEN_FIELDS:
            usage[field] = data.get(f"session_{field}", 0)
        usage["cost_usd"] = data["session_cost_usd"]
        usage["price_unknown"] = data.get("session_price_unknown", False)
        if data.get("inherited"):
            # Spent by the parent session: listed, marked, not part of this session's cost.
            row["inherited"] = True
        else:
            state["cost_series"].append([ts, data["session_cost_usd"]])
        usage["nodes"][data["node_id"]] = row
    elif name == EventName.EXECUTION_STARTED:
        state["status"] = SessionStatus.RUNNING.value
        if state["started_at"] is None:
            state["started_at"] = ts
        for node_id in data["nodes"]:
            state["nodes"].setdefault(node_id, _default_node())
    elif name == EventName.EXECUTION_PAUSED:
        state["status"] = SessionStatus.PAUSED.value
    elif name == EventName.EXECUTION_RESUMED:
        # A review still pending when the session was paused: back to waiting for it.
        state["status"] = (
            SessionStatus.WAITING_REVIEW if state["pending_review"] else SessionStatus.RUNNING
        ).value
    elif name == EventName.NODE_RESUMED:
        if state["status"] in (SessionStatus.WAITING_REVIEW, SessionStatus.PAUSED):
            state["status"] = SessionStatus.RUNNING.value
        state["pending_review"] = None
    elif name == EventName.EXECUTION_COMPLETED:
        _finish(state, SessionStatus.COMPLETED.value, ts)
        for field in ("cost_usd", "price_unknown", *TOKEN_FIELDS):
            if field in data:
                state["usage"][field] = data[field]
    elif name == EventName.EXECUTION_STOPPED:
        _finish(state, SessionStatus.STOPPED.value, ts)
    elif name == EventName.EXECUTION_FAILED:
        _finish(state, SessionStatus.FAILED.value, ts)
        state["error"] = data["error"]
    elif name == EventName.ERROR:
        if envelope.get("seq") is not None:
            state["error"] = data["error"]
    elif name == EventName.HUMAN_INTERACTION_REQUIRED:
        timeout = data.get("timeout")
        state["status"] = SessionStatus.WAITING_REVIEW.value
        state["pending_review"] = {
            "node_id": data["node_id"],
            "reason": data["reason"],
            "timeout": timeout,
            "deadline": plus_seconds(ts, timeout) if timeout else None,
            "reviewed_node_id": data.get("reviewed_node_id"),
            "round": data.get("round", 1),
            "tool_call_id": data.get("tool_call_id"),
            "tool": data.get("tool"),
            "arguments": data.get("arguments"),
            "budget_usd": data.get("budget_usd"),
            "cost_usd": data.get("cost_usd"),
        }
    elif name == EventName.REVIEW_SUBMITTED:
        state["reviews"].append(
            {
                "node_id": data["node_id"],
                "decision": data["decision"],
                "comment": data["comment"],
                "by": data["by"],
                "timed_out": data["timed_out"],
                "tool_call_id": data.get("tool_call_id"),
                "at": ts,
            }
        )
        state["pending_review"] = None
        call = state["tool_calls"].get(data.get("tool_call_id") or "")
        if call is not None and data["decision"] == ReviewDecision.APPROVE:
            call["status"] = ToolCallStatus.RUNNING.value
    elif name == EventName.USER_MESSAGE:
        state["messages"].append(
            {
                "key": f"user:{data['message_id']}",
                "kind": MessageKind.USER.value,
                "node_id": None,
                "agent_id": None,
                "user": data["user"],
                "text": data["text"],
                "thinking": "",
                "final": True,
                "started_at": ts,
            }
        )
    elif name == EventName.BUDGET_STATUS:
        state["budget"] = {
            "budget_usd": data["budget_usd"],
            "cost_usd": data["cost_usd"],
            "state": data["state"],
            "at": ts,
        }
    elif name == EventName.MEMBER_CHANGED:
        # members: user -> role. A snapshot replaces it with the session's members as they
        # are (realtime.snapshots): a member let in before this event existed has no event.
        members = state["members"]
        if data["role"] is None:
            members.pop(data["user"], None)
        else:
            members[data["user"]] = data["role"]
        state["member_changes"].append(
            {
                "user": data["user"],
                "role": data["role"],
                "previous": data["previous"],
                "by": data["by"],
                "link": data.get("link"),
                "at": ts,
            }
        )


def fold(envelopes: list[dict[str, Any]], initial: dict[str, Any] | None = None) -> dict[str, Any]:
    """State after applying the envelopes, in order, to a copy of ``initial``."""
    state = copy.deepcopy(initial) if initial is not None else empty_state()
    for envelope in envelopes:
        apply(state, envelope)
    return state
