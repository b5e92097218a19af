"""The words of the meeting protocol, each defined once.

Every Python module uses these enums (they are ``str`` subclasses, so they compare equal to,
serialise as and hash like their values); the ones stored in a column are Django
``TextChoices``. The browser reads the same lists from ``static/js/vocabulary.js``, which
``manage.py export_vocabulary`` writes from this module; a test fails when the two disagree.
"""

from __future__ import annotations

from enum import StrEnum

from django.db import models


class EventName(models.TextChoices):
    """Every event a server frame can carry (stored in the event log's ``event`` column)."""

    TOKEN_STREAM = "token_stream"
    NODE_STATE_CHANGE = "node_state_change"
    NODE_PARALLEL_START = "node:parallel_start"
    TOKEN_USAGE = "token_usage"
    EXECUTION_STARTED = "execution:started"
    EXECUTION_PAUSED = "execution:paused"
    EXECUTION_RESUMED = "execution:resumed"
    EXECUTION_COMPLETED = "execution:completed"
    EXECUTION_STOPPED = "execution:stopped"
    EXECUTION_FAILED = "execution:failed"
    ERROR = "error"
    HUMAN_INTERACTION_REQUIRED = "human_interaction_required"
    REVIEW_SUBMITTED = "review_submitted"
    NODE_RESUMED = "node_resumed"
    USER_MESSAGE = "user_message"
    TOOL_CALL_START = "tool_call_start"
    TOOL_CALL_ARGS = "tool_call_args"
    TOOL_CALL_END = "tool_call_end"
    TOOL_CALL_RESULT = "tool_call_result"
    MEMBER_CHANGED = "member_changed"
    BUDGET_STATUS = "budget_status"
    # Ephemeral: per connection or per moment, never logged (seq null).
    SNAPSHOT = "snapshot"
    ACK = "ack"
    PONG = "pong"
    PRESENCE = "presence"
    BATCH = "batch"
    REPLAY_CONTROL = "replay_control"


class CommandName(StrEnum):
    """Every command a client frame can carry."""

    PING = "ping"
    START_SESSION = "start_session"
    PAUSE_SESSION = "pause_session"
    RESUME_SESSION = "resume_session"
    STOP_SESSION = "stop_session"
    USER_INPUT = "user_input"
    SUBMIT_REVIEW = "submit_review"
    REPLAY_CONTROL = "replay_control"


class SessionStatus(models.TextChoices):
    """Where a session's run is; the room's ``state.status``."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_REVIEW = "waiting_review"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


ACTIVE_SESSION_STATUSES = frozenset(
    {SessionStatus.RUNNING, SessionStatus.PAUSED, SessionStatus.WAITING_REVIEW}
)
FINISHED_SESSION_STATUSES = frozenset(
    {SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.STOPPED}
)


class NodeType(models.TextChoices):
    """What a workflow node does (``nodes[].type`` of a workflow and of the snapshot's graph)."""

    AGENT = "agent"
    HUMAN_REVIEW = "human_review"


class NodeStatus(models.TextChoices):
    """Where one node of the workflow is (``node_state_change.status``)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_REVIEW = "waiting_review"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    STOPPED = "stopped"


# A node in one of these will not change again in this run (a take-over may reset it).
FINAL_NODE_STATUSES = frozenset(
    {NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.STOPPED}
)
# A node in one of these is being worked on by a runner.
BUSY_NODE_STATUSES = frozenset({NodeStatus.RUNNING, NodeStatus.PAUSED, NodeStatus.WAITING_REVIEW})


class MessageKind(models.TextChoices):
    """Who speaks in the transcript: an agent node or a participant."""

    AGENT = "agent"
    USER = "user"


class ToolCallStatus(models.TextChoices):
    """Where one tool call is (``tool_call_result.status`` once it ended).

    ``interrupted``: the runner died while the call ran; the take-over does not repeat it
    silently, it re-runs the node (docs/engine.md, "Tools that are safe to repeat")."""

    STREAMING = "streaming"
    WAITING_APPROVAL = "waiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"
    INTERRUPTED = "interrupted"


FINAL_TOOL_CALL_STATUSES = frozenset(
    {ToolCallStatus.SUCCEEDED, ToolCallStatus.FAILED, ToolCallStatus.DENIED,
     ToolCallStatus.INTERRUPTED}
)


class TokenType(StrEnum):
    """The kinds of token a model call is billed for: each is a ``<type>_tokens`` field of
    ``token_usage``, a column of the usage rows, a price and the ``type`` label of
    ``agentroom_tokens_total``.

    Cached input (read from the provider's cache) and cache writes are *part of* input, and
    reasoning is *part of* output, as OpenTelemetry's GenAI conventions and AG-UI count them:
    never added on top (docs/engine.md, "Usage and cost")."""

    INPUT = "input"
    CACHED_INPUT = "cached_input"
    CACHE_WRITE = "cache_write"
    OUTPUT = "output"
    REASONING = "reasoning"


class BudgetState(models.TextChoices):
    """Where a session's spend stands against its budget (``budget_status.state``)."""

    OK = "ok"
    WARNING = "warning"  # the live cost crossed the warning threshold
    REACHED = "reached"  # the run holds until someone raises the budget or stops it


class ReviewDecision(models.TextChoices):
    APPROVE = "approve"
    REJECT = "reject"


class Role(models.TextChoices):
    """How a user stands in a session: the room's member list and the sessions list."""

    OWNER = "owner"
    CONTROLLER = "controller"  # a member who may watch and control
    VIEWER = "viewer"  # a member who may watch
    STAFF = "staff"  # not a member: sees it through the admin's permissions


# The roles a member can be given (``member_changed.role``); the owner is not a member.
MEMBER_ROLES = frozenset({Role.CONTROLLER, Role.VIEWER})


class Access(StrEnum):
    """What a participant may do in a session."""

    WATCH = "watch"
    CONTROL = "control"


# Commands a watch-only participant may send.
WATCHER_COMMANDS = frozenset({CommandName.PING})
