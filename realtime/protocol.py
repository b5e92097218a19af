"""The WebSocket protocol: every event, every command, the envelope and close codes.

This is the only place that knows event and command names. The original design lost
every message because the server wrote ``type`` while the browser read ``event``; keeping
the names, the envelope builder and the validators together here (and testing the docs and
the JavaScript fixtures against this module) makes that class of bug impossible.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from realtime.timestamps import now_iso
from realtime.vocabulary import CommandName, EventName, ReviewDecision, TokenType

# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Field:
    name: str
    types: tuple[type, ...]
    required: bool = True


def _f(name: str, *types: type, required: bool = True) -> Field:
    return Field(name, types, required)


STR = (str,)
INT = (int,)
NUM = (int, float)
BOOL = (bool,)
OPT_STR = (str, type(None))
OPT_NUM = (int, float, type(None))

# ``<type>_tokens`` for every token type: the usage fields of events, folded state, usage
# rows and providers' Usage. Cached input and cache writes are part of input, reasoning part
# of output. Those besides input and output are optional in events (logged before they
# existed: 0).
TOKEN_FIELDS = tuple(f"{kind}_tokens" for kind in TokenType)
EXTRA_TOKEN_FIELDS = tuple(
    f"{kind}_tokens" for kind in TokenType if kind not in (TokenType.INPUT, TokenType.OUTPUT)
)

# event name -> fields of its ``data`` object. ``logged`` events carry a ``seq`` and are
# stored in the session event log; ephemeral ones (replies and presence) have ``seq: null``.
LOGGED_EVENTS: dict[str, tuple[Field, ...]] = {
    EventName.TOKEN_STREAM: (
        _f("chunk", *STR),
        _f("agent_id", *STR),
        _f("node_id", *STR),
        _f("is_thinking", *BOOL),
    ),
    EventName.NODE_STATE_CHANGE: (
        _f("node_id", *STR),
        _f("status", *STR),
        _f("agent_id", *OPT_STR, required=False),
        _f("error", *OPT_STR, required=False),
        # A fork's copy of its parent's node (docs/replay.md): not run in this session.
        _f("inherited", *BOOL, required=False),
    ),
    EventName.NODE_PARALLEL_START: (
        _f("node_id", *OPT_STR),
        _f("branches", list),
    ),
    EventName.TOKEN_USAGE: (
        _f("node_id", *STR),
        _f("agent_id", *STR),
        _f("model", *STR),
        _f("input_tokens", *INT),
        _f("output_tokens", *INT),
        *(_f(name, *INT, required=False) for name in EXTRA_TOKEN_FIELDS),
        # null: the model has no known price ("price unknown", never 0).
        _f("estimated_cost_usd", *OPT_NUM),
        _f("final", *BOOL),
        _f("session_input_tokens", *INT),
        _f("session_output_tokens", *INT),
        *(_f(f"session_{name}", *INT, required=False) for name in EXTRA_TOKEN_FIELDS),
        # The priced usage; session_price_unknown: some of the session's usage has no price.
        _f("session_cost_usd", *NUM),
        # A fork's copy of its parent's usage: shown, not counted in the session's figures.
        _f("inherited", *BOOL, required=False),
        _f("session_price_unknown", *BOOL, required=False),
    ),
    EventName.EXECUTION_STARTED: (_f("workflow", *STR), _f("nodes", list)),
    EventName.EXECUTION_PAUSED: (),
    EventName.EXECUTION_RESUMED: (),
    EventName.EXECUTION_COMPLETED: (
        _f("input_tokens", *INT),
        _f("output_tokens", *INT),
        *(_f(name, *INT, required=False) for name in EXTRA_TOKEN_FIELDS),
        _f("cost_usd", *NUM),
        _f("price_unknown", *BOOL, required=False),
    ),
    EventName.EXECUTION_STOPPED: (_f("by", *OPT_STR, required=False),),
    EventName.EXECUTION_FAILED: (_f("error", *STR),),
    EventName.ERROR: (
        _f("error", *STR),
        _f("node_id", *OPT_STR, required=False),
        _f("code", *STR, required=False),
        _f("id", *OPT_STR, required=False),
    ),
    EventName.HUMAN_INTERACTION_REQUIRED: (
        _f("node_id", *STR),
        _f("reason", *STR),
        _f("timeout", int, type(None), required=False),
        _f("reviewed_node_id", *OPT_STR, required=False),
        _f("round", *INT, required=False),
        # Present when the review approves one tool call (not a node's answer).
        _f("tool_call_id", *OPT_STR, required=False),
        _f("tool", *OPT_STR, required=False),
        _f("arguments", *OPT_STR, required=False),
        # Present when the budget is reached (``node_id`` is then ""): raise it or stop.
        _f("budget_usd", *NUM, required=False),
        _f("cost_usd", *NUM, required=False),
    ),
    EventName.REVIEW_SUBMITTED: (
        _f("node_id", *STR),
        _f("decision", *STR),
        _f("comment", *STR),
        _f("by", *OPT_STR),
        _f("timed_out", *BOOL),
        _f("tool_call_id", *OPT_STR, required=False),
    ),
    EventName.NODE_RESUMED: (_f("node_id", *OPT_STR, required=False),),
    EventName.USER_MESSAGE: (
        _f("text", *STR),
        _f("user", *STR),
        _f("message_id", *STR),
    ),
    EventName.TOOL_CALL_START: (
        _f("call_id", *STR),
        _f("node_id", *STR),
        _f("agent_id", *STR),
        _f("tool", *STR),
        _f("round", *INT),
    ),
    EventName.TOOL_CALL_ARGS: (
        _f("call_id", *STR),
        _f("node_id", *STR),
        _f("delta", *STR),
    ),
    EventName.TOOL_CALL_END: (
        _f("call_id", *STR),
        _f("node_id", *STR),
        _f("arguments", *STR),
        _f("requires_approval", *BOOL),
    ),
    EventName.TOOL_CALL_RESULT: (
        _f("call_id", *STR),
        _f("node_id", *STR),
        _f("status", *STR),
        _f("result", *STR),
        _f("error", *OPT_STR),
        _f("duration_ms", *INT),
    ),
    EventName.MEMBER_CHANGED: (
        _f("user", *STR),
        _f("role", *OPT_STR),
        _f("previous", *OPT_STR),
        _f("by", *OPT_STR),
        _f("link", *OPT_STR, required=False),
    ),
    EventName.BUDGET_STATUS: (
        _f("budget_usd", *OPT_NUM),
        _f("cost_usd", *NUM),
        _f("state", *STR),
    ),
}

EPHEMERAL_EVENTS: dict[str, tuple[Field, ...]] = {
    EventName.SNAPSHOT: (
        _f("session", dict),
        _f("workflow", dict),
        _f("state", dict),
        _f("presence", dict),
        _f("last_seq", *INT),
        _f("resync", *BOOL),
        _f("can_control", *BOOL),
    ),
    EventName.ACK: (_f("id", *OPT_STR), _f("cmd", *STR), _f("duplicate", *BOOL)),
    EventName.PONG: (_f("server_time", *STR), _f("id", *OPT_STR, required=False)),
    EventName.PRESENCE: (_f("count", *INT), _f("users", list)),
    EventName.BATCH: (_f("events", list),),
    EventName.REPLAY_CONTROL: (
        _f("seq", *INT),
        _f("playing", *BOOL),
        _f("speed", *NUM),
        _f("active", *BOOL),
        _f("by", *STR),
    ),
}

# ``error`` is both a logged event (a node failed) and an ephemeral reply to a command.
EVENTS: dict[str, tuple[Field, ...]] = {**LOGGED_EVENTS, **EPHEMERAL_EVENTS}

SEED_EVENTS = (
    EventName.TOKEN_STREAM,
    EventName.NODE_STATE_CHANGE,
    EventName.NODE_PARALLEL_START,
    EventName.TOKEN_USAGE,
    EventName.EXECUTION_PAUSED,
    EventName.EXECUTION_COMPLETED,
    EventName.ERROR,
    EventName.HUMAN_INTERACTION_REQUIRED,
    EventName.NODE_RESUMED,
)


# --------------------------------------------------------------------------- commands

MAX_TEXT = 4000
MAX_COMMENT = 4000
MAX_COMMAND_ID = 64
MAX_BUDGET_USD = 1_000_000

COMMANDS: dict[str, tuple[Field, ...]] = {
    CommandName.PING: (_f("last_seq", *INT, required=False),),
    CommandName.START_SESSION: (),
    CommandName.PAUSE_SESSION: (),
    CommandName.RESUME_SESSION: (),
    CommandName.STOP_SESSION: (),
    CommandName.USER_INPUT: (_f("text", *STR),),
    CommandName.SUBMIT_REVIEW: (
        _f("node_id", *STR),
        _f("decision", *STR),
        _f("comment", *STR, required=False),
        _f("call_id", *STR, required=False),
        # Approving a budget request: the new budget in USD (more than the current one).
        _f("budget_usd", *NUM, required=False),
    ),
    CommandName.REPLAY_CONTROL: (
        _f("seq", *INT),
        _f("playing", *BOOL),
        _f("speed", *NUM, required=False),
        _f("active", *BOOL, required=False),
    ),
}

# Replay speeds a shared replay may run at: 1x, 4x, 16x and 0 for "as fast as possible".
REPLAY_SPEEDS = (0, 1, 4, 16)


ERROR_CODES = {
    "bad_json": "the frame is not a JSON object",
    "binary_not_supported": "binary frames are not part of the protocol",
    "unknown_cmd": "no such command",
    "invalid_data": "a field is missing, of the wrong type or out of range",
    "forbidden": "you may watch this session but not control it",
    "invalid_state": "the command makes no sense in the session's current state",
    "rate_limited": "too many commands; slow down",
    "not_found": "no such node or review",
    "node_failed": "a node of the workflow failed",
    "provider_error": "the model provider failed",
    "internal": "the server could not do this; nothing was changed",
}

# --------------------------------------------------------------------------- close codes

CLOSE_CODES = {
    1009: "frame larger than WS_MAX_FRAME_BYTES",
    4009: "frame larger than WS_MAX_FRAME_BYTES, from a server that lets the application send "
    "only 1000 and 3000-4999 (daphne started without --websocket-max-message-size)",
    4400: "bad connection request (e.g. last_seq is not a non-negative integer)",
    4401: "not logged in",
    4403: "not allowed to see this session (or Origin not allowed)",
    4404: "no such session",
    4408: "idle: nothing received for WS_IDLE_TIMEOUT seconds",
    4409: "too slow: the outgoing buffer limit was reached; reconnect with last_seq",
    4412: "your access to this session changed (e.g. control lowered to watch): reconnect at "
    "once for a snapshot with your current rights",
    4429: "rate limited: kept sending commands faster than allowed",
    4430: "too many open sockets for this user",
    4503: "temporarily unavailable (channel layer or database down); reconnect later",
}

# Sent instead when the server refuses the first code from the application (autobahn, under
# daphne, accepts 1000 and 3000-4999 only).
CLOSE_CODE_FALLBACK = {1009: 4009}


# --------------------------------------------------------------------------- envelope


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any) -> str:
    """Compact JSON used for every frame and for the stored event payloads."""
    return _dumps(value)


def envelope(
    *,
    event: str,
    session_id: str,
    data: dict[str, Any] | None = None,
    node_id: str | None = None,
    seq: int | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Build the one envelope shape every server frame has."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    return {
        "event": event,
        "data": data or {},
        "timestamp": timestamp or now_iso(),
        "node_id": node_id,
        "seq": seq,
        "session_id": session_id,
    }


def encode(**fields: Any) -> str:
    """``envelope(**fields)`` as the JSON text sent on the wire (encoded once per event)."""
    return dumps(envelope(**fields))


_EVENTS_MARKER = '"events":[]'


def batch_parts(session_id: str) -> tuple[str, str]:
    """A ``batch`` frame split around its (empty) event list: what goes before the first
    frame and after the last, so a writer joins frames between them without re-encoding."""
    empty = dumps(envelope(event=EventName.BATCH, session_id=session_id, data={"events": []}))
    cut = empty.index(_EVENTS_MARKER) + len(_EVENTS_MARKER) - 1
    return empty[:cut], empty[cut:]


def encode_batch(session_id: str, frames: list[str]) -> str:
    """Join already-encoded envelopes into one ``batch`` frame without re-encoding them."""
    head, tail = batch_parts(session_id)
    return head + ",".join(frames) + tail


class ProtocolError(Exception):
    """A client frame that breaks the protocol; ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.command_id = command_id


def _check_fields(fields: tuple[Field, ...], data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise ProtocolError("invalid_data", f"{where}: data must be an object")
    for field in fields:
        if field.name not in data:
            if field.required:
                raise ProtocolError("invalid_data", f"{where}: missing field {field.name!r}")
            continue
        value = data[field.name]
        # bool is an int subclass: refuse True where an int is expected.
        if isinstance(value, bool) and bool not in field.types:
            raise ProtocolError("invalid_data", f"{where}: {field.name!r} has the wrong type")
        if not isinstance(value, field.types):
            raise ProtocolError("invalid_data", f"{where}: {field.name!r} has the wrong type")


def validate_event(frame: dict[str, Any]) -> None:
    """Check a server frame against the protocol (used by the contract tests)."""
    if set(frame) != {"event", "data", "timestamp", "node_id", "seq", "session_id"}:
        raise ProtocolError("invalid_data", f"envelope keys are {sorted(frame)}")
    name = frame["event"]
    if name not in EVENTS:
        raise ProtocolError("unknown_cmd", f"unknown event {name!r}")
    _check_fields(EVENTS[name], frame["data"], name)
    if name in LOGGED_EVENTS and name != EventName.ERROR:
        if not isinstance(frame["seq"], int) or frame["seq"] < 1:
            raise ProtocolError("invalid_data", f"{name}: logged event without seq")
    if name in EPHEMERAL_EVENTS and frame["seq"] is not None:
        raise ProtocolError("invalid_data", f"{name}: ephemeral event with a seq")
    if name == EventName.BATCH:
        for inner in frame["data"]["events"]:
            validate_event(inner)


@dataclass(frozen=True)
class Command:
    cmd: str
    data: dict[str, Any]
    id: str | None


def parse_command(text: str | None, max_depth: int = 8) -> Command:
    """Parse and validate one client frame; raises ProtocolError with a code."""
    if text is None:
        raise ProtocolError("binary_not_supported", "send JSON text frames")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ProtocolError("bad_json", "the frame must be a JSON object")
    command_id = raw.get("id")
    if command_id is not None and (
        not isinstance(command_id, str) or not 0 < len(command_id) <= MAX_COMMAND_ID
    ):
        raise ProtocolError("invalid_data", f"id must be a string of 1..{MAX_COMMAND_ID} chars")
    name = raw.get("cmd")
    if not isinstance(name, str):
        raise ProtocolError("unknown_cmd", "missing 'cmd'", command_id)
    if name not in COMMANDS:
        raise ProtocolError("unknown_cmd", f"unknown command {name[:40]!r}", command_id)
    data = raw.get("data", {})
    if data is None:
        data = {}
    try:
        _check_fields(COMMANDS[name], data, name)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, command_id) from None
    extra = set(data) - {f.name for f in COMMANDS[name]}
    if extra:
        raise ProtocolError("invalid_data", f"{name}: unknown fields {sorted(extra)[:5]}", command_id)
    if name == CommandName.USER_INPUT:
        text_value = data["text"].strip()
        if not text_value or len(text_value) > MAX_TEXT:
            raise ProtocolError("invalid_data", f"text must be 1..{MAX_TEXT} characters", command_id)
        data = {"text": text_value}
    if name == CommandName.SUBMIT_REVIEW:
        if data["decision"] not in ReviewDecision.values:
            raise ProtocolError("invalid_data", "decision must be approve or reject", command_id)
        if (len(data.get("comment", "")) > MAX_COMMENT or len(data["node_id"]) > 100
                or len(data.get("call_id", "")) > 100):
            raise ProtocolError("invalid_data", "comment or node_id too long", command_id)
        budget = data.get("budget_usd")
        if budget is not None and not (math.isfinite(budget) and 0 < budget <= MAX_BUDGET_USD):
            raise ProtocolError(
                "invalid_data", f"budget_usd must be more than 0 and at most {MAX_BUDGET_USD}",
                command_id,
            )
    if name == CommandName.REPLAY_CONTROL:
        if data["seq"] < 0:
            raise ProtocolError("invalid_data", "seq must be >= 0", command_id)
        if data.get("speed", 1) not in REPLAY_SPEEDS:
            raise ProtocolError("invalid_data", "speed must be 0 (as fast as possible), 1, 4 or 16",
                                command_id)
        data = {"seq": data["seq"], "playing": data["playing"], "speed": data.get("speed", 1),
                "active": data.get("active", True)}
    return Command(cmd=name, data=data, id=command_id)
