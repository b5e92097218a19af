"""Our logged events as AG-UI events, for one client's stream.

One ``Translator`` per stream: it folds the events it is given (``realtime.state``, the same
fold as the room) so it knows which message each token belongs to, which AG-UI messages and
steps it has opened, and the last room state it sent (``STATE_DELTA`` is the JSON Patch from
that to the new one, by ``jsonpatch``). The table of what becomes what is in docs/agui.md.

Message ids: an agent's answer is ``<node>#<n>`` (the room's message key: one per node and
round); text after a tool call continues in ``<node>#<n>.2``, ``.3``, ... (an AG-UI text
message cannot reopen once ended); its reasoning is ``<key>:reasoning``; a participant's
message is ``user:<id>``; a tool result is ``<call id>:result``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    Interrupt,
    MessagesSnapshotEvent,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    StateDeltaEvent,
    StateSnapshotEvent,
    StepFinishedEvent,
    StepStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.core import (
    TokenUsage as AguiTokenUsage,
)

from realtime import state as room_state
from realtime.vocabulary import (
    FINAL_NODE_STATUSES,
    EventName,
    MessageKind,
    NodeStatus,
    ToolCallStatus,
)

# Events that AG-UI has a type for, or that only move the state; the rest become CUSTOM.
_NO_CUSTOM = frozenset({
    EventName.TOKEN_STREAM, EventName.NODE_STATE_CHANGE, EventName.TOOL_CALL_START,
    EventName.TOOL_CALL_ARGS, EventName.TOOL_CALL_END, EventName.TOOL_CALL_RESULT,
    EventName.USER_MESSAGE, EventName.EXECUTION_COMPLETED, EventName.EXECUTION_FAILED,
    EventName.EXECUTION_STOPPED,
})


# Events that never move the room view (room_view): no STATE_DELTA is computed for them.
_VIEW_UNCHANGED = frozenset({
    EventName.TOKEN_STREAM, EventName.TOOL_CALL_START, EventName.TOOL_CALL_ARGS,
    EventName.TOOL_CALL_END, EventName.TOOL_CALL_RESULT, EventName.USER_MESSAGE,
})


@dataclass
class Outcome:
    """How the current AG-UI run ends, when an event ends it."""

    kind: str  # "success" | "interrupt" | "cancelled" | "error"
    interrupts: list[Interrupt] = field(default_factory=list)
    usage: list[AguiTokenUsage] = field(default_factory=list)
    error: str = ""


def interrupt_of(pending: dict[str, Any]) -> Interrupt:
    """The AG-UI interrupt for a pending review: answered by a resume entry whose payload is
    ``{"decision": "approve" | "reject", "comment": "..."}``."""
    call_id = pending.get("tool_call_id")
    if call_id:
        return Interrupt(
            id=f"tool:{call_id}", reason="tool_approval", tool_call_id=call_id,
            message=f"{pending['reason']} Arguments: {pending.get('arguments') or '{}'}",
            response_schema=RESPONSE_SCHEMA, expires_at=pending.get("deadline"),
        )
    return Interrupt(
        id=f"review:{pending['node_id']}:{pending.get('round', 1)}", reason="human_review",
        message=pending["reason"], response_schema=RESPONSE_SCHEMA,
        expires_at=pending.get("deadline"),
    )


RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {"decision": {"enum": ["approve", "reject"]}, "comment": {"type": "string"}},
    "required": ["decision"],
}


def room_view(state: dict[str, Any]) -> dict[str, Any]:
    """The part of the room's state an AG-UI client holds: run status, nodes, usage and cost,
    the review waited for (the transcript travels as messages, not state)."""
    return {
        "status": state["status"],
        "nodes": {nid: {"status": n["status"], "error": n["error"]} for nid, n in state["nodes"].items()},
        "usage": copy.deepcopy(state["usage"]),
        "pending_review": copy.deepcopy(state["pending_review"]),
        "error": state["error"],
    }


def usage_entries(state: dict[str, Any]) -> list[AguiTokenUsage]:
    """RUN_FINISHED.usage: one entry per model, summed over the nodes that used it."""
    by_model: dict[str, list[int]] = {}
    for node in state["usage"]["nodes"].values():
        sums = by_model.setdefault(node["model"], [0, 0])
        sums[0] += node["input_tokens"]
        sums[1] += node["output_tokens"]
    return [
        AguiTokenUsage(model=model, input_tokens=i, output_tokens=o, total_tokens=i + o)
        for model, (i, o) in sorted(by_model.items())
    ]


def messages_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The transcript as AG-UI messages (MESSAGES_SNAPSHOT for a client joining late)."""
    out: list[dict[str, Any]] = []
    for message in state["messages"]:
        if message["kind"] == MessageKind.USER:
            out.append({"id": message["key"], "role": "user", "content": message["text"],
                        "name": message["user"]})
        else:
            out.append({"id": message["key"], "role": "assistant", "content": message["text"],
                        "name": message["agent_id"]})
    return out


class Translator:
    def __init__(self) -> None:
        self.state = room_state.empty_state()
        self.sent_view: dict[str, Any] | None = None
        self.open_text: dict[str, str] = {}  # node id -> AG-UI message id of its open text
        self.segments: dict[str, int] = {}  # room message key -> text segments opened
        self.open_reasoning: dict[str, str] = {}  # node id -> reasoning message id
        self.steps: set[str] = set()  # nodes with an open step

    # ------------------------------------------------------------------ snapshots
    def snapshot(self) -> list[BaseEvent]:
        """STATE_SNAPSHOT, then MESSAGES_SNAPSHOT if the meeting already said something."""
        self.sent_view = room_view(self.state)
        events: list[BaseEvent] = [StateSnapshotEvent(snapshot=self.sent_view)]
        messages = messages_of(self.state)
        if messages:
            events.append(MessagesSnapshotEvent.model_validate({"messages": messages}))
        # The client starts here: nothing is open for it. Text streaming on continues in a new
        # message id (the snapshot holds the text so far); reasoning and steps open afresh.
        self.open_text.clear()
        self.open_reasoning.clear()
        self.steps.clear()
        return events

    def prime(self, envelopes: list[dict[str, Any]]) -> int | None:
        """Fold what a resuming client already received, without emitting it again. Returns
        the seq that opened the run the client is in (None: between runs), as a watch
        stream numbers them."""
        opened: int | None = None
        for envelope in envelopes:
            events, outcome = self.translate(envelope)
            if (events or outcome) and opened is None:
                opened = envelope["seq"]
            if outcome is not None:
                opened = None
        self.sent_view = room_view(self.state)  # what its deltas brought it to
        return opened

    # ------------------------------------------------------------------ events
    def translate(self, envelope: dict[str, Any]) -> tuple[list[BaseEvent], Outcome | None]:
        """The AG-UI events for one of our logged events, and the run's end if it ends it."""
        name, data = envelope["event"], envelope["data"]
        room_state.apply(self.state, envelope)
        out: list[BaseEvent] = []
        outcome: Outcome | None = None
        if name == EventName.TOKEN_STREAM:
            self._tokens(data, out)
        elif name == EventName.NODE_STATE_CHANGE:
            self._node_state(data, out)
        elif name == EventName.TOOL_CALL_START:
            self._close_text(data["node_id"], out=out)
            out.append(ToolCallStartEvent(
                tool_call_id=data["call_id"], tool_call_name=data["tool"],
                parent_message_id=self.state["tool_calls"][data["call_id"]]["message_key"],
            ))
        elif name == EventName.TOOL_CALL_ARGS:
            out.append(ToolCallArgsEvent(tool_call_id=data["call_id"], delta=data["delta"]))
        elif name == EventName.TOOL_CALL_END:
            out.append(ToolCallEndEvent(tool_call_id=data["call_id"]))
        elif name == EventName.TOOL_CALL_RESULT:
            ok = data["status"] == ToolCallStatus.SUCCEEDED
            out.append(ToolCallResultEvent(
                message_id=f"{data['call_id']}:result", tool_call_id=data["call_id"], role="tool",
                content=data["result"] if ok else f"error: {data['error']}",
            ))
        elif name == EventName.USER_MESSAGE:
            key = f"user:{data['message_id']}"
            out += [TextMessageStartEvent(message_id=key, role="user", name=data["user"]),
                    TextMessageContentEvent(message_id=key, delta=data["text"]),
                    TextMessageEndEvent(message_id=key)]
        elif name == EventName.HUMAN_INTERACTION_REQUIRED:
            outcome = Outcome("interrupt", interrupts=[interrupt_of(self.state["pending_review"])])
        elif name == EventName.EXECUTION_COMPLETED:
            outcome = Outcome("success", usage=usage_entries(self.state))
        elif name == EventName.EXECUTION_STOPPED:
            outcome = Outcome("cancelled", usage=usage_entries(self.state))
        elif name == EventName.EXECUTION_FAILED:
            outcome = Outcome("error", error=data["error"])
        if name not in _NO_CUSTOM:
            out.append(CustomEvent(name=str(name), value=data))
        if outcome is not None and outcome.kind != "interrupt":
            # The run ends (a stop comes before its nodes say they stopped): close what is open.
            for node_id in sorted(set(self.open_text) | set(self.open_reasoning) | self.steps):
                self._close_reasoning(node_id, out)
                self._close_text(node_id, out=out)
                if node_id in self.steps:
                    self.steps.discard(node_id)
                    out.append(StepFinishedEvent(step_name=node_id))
        elif outcome is not None:
            for node_id in sorted(set(self.open_text) | set(self.open_reasoning)):
                self._close_reasoning(node_id, out)
                self._close_text(node_id, out=out)
        if name not in _VIEW_UNCHANGED:
            self._delta(out)
        return out, outcome

    def _tokens(self, data: dict[str, Any], out: list[BaseEvent]) -> None:
        node_id = data["node_id"]
        message = room_state._last_agent_message(self.state, node_id)
        assert message is not None
        if data["is_thinking"]:
            rid = self.open_reasoning.get(node_id)
            if rid is None:
                rid = self.open_reasoning[node_id] = f"{message['key']}:reasoning"
                out += [ReasoningStartEvent(message_id=rid),
                        ReasoningMessageStartEvent(message_id=rid, role="reasoning")]
            out.append(ReasoningMessageContentEvent(message_id=rid, delta=data["chunk"]))
            return
        self._close_reasoning(node_id, out)
        mid = self.open_text.get(node_id)
        if mid is None:
            count = self.segments[message["key"]] = self.segments.get(message["key"], 0) + 1
            mid = self.open_text[node_id] = message["key"] if count == 1 else f"{message['key']}.{count}"
            out.append(TextMessageStartEvent(message_id=mid, role="assistant", name=data["agent_id"]))
        out.append(TextMessageContentEvent(message_id=mid, delta=data["chunk"]))

    def _node_state(self, data: dict[str, Any], out: list[BaseEvent]) -> None:
        node_id, status = data["node_id"], data["status"]
        if status == NodeStatus.RUNNING and node_id not in self.steps:
            self.steps.add(node_id)
            out.append(StepStartedEvent(step_name=node_id))
        elif status in FINAL_NODE_STATUSES and node_id in self.steps:
            self._close_reasoning(node_id, out)
            self._close_text(node_id, out=out)
            self.steps.discard(node_id)
            out.append(StepFinishedEvent(step_name=node_id))

    def _close_reasoning(self, node_id: str, out: list[BaseEvent]) -> None:
        rid = self.open_reasoning.pop(node_id, None)
        if rid is not None:
            out += [ReasoningMessageEndEvent(message_id=rid), ReasoningEndEvent(message_id=rid)]

    def _close_text(self, node_id: str, *, out: list[BaseEvent]) -> None:
        mid = self.open_text.pop(node_id, None)
        if mid is not None:
            out.append(TextMessageEndEvent(message_id=mid))

    def _delta(self, out: list[BaseEvent]) -> None:
        if self.sent_view is None:
            return
        view = room_view(self.state)
        patch = jsonpatch.make_patch(self.sent_view, view).patch
        if patch:
            self.sent_view = view
            out.append(StateDeltaEvent.model_validate({"delta": patch}))
