"""What a meeting session leaves behind: session, nodes, usage, transcript, reviews, events.

Runtime rows are written by services at node boundaries (never per token). The event log
(``realtime.models.SessionEvent``) is the truth viewers are served from: every logged event is
stored before it is broadcast, so a reconnecting viewer can always be caught up from it.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse

from realtime.vocabulary import (
    ACTIVE_SESSION_STATUSES,
    MEMBER_ROLES,
    BudgetState,
    MessageKind,
    NodeStatus,
    NodeType,
    ReviewDecision,
    Role,
    SessionStatus,
)
from workflows.vocabulary import ReviewStatus

ZERO = Decimal("0")
MICRO_DOLLAR = Decimal("0.000001")


class Session(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="meeting_sessions"
    )
    title = models.CharField(max_length=200)
    workflow_slug = models.CharField(max_length=50, db_index=True)
    workflow_definition = models.JSONField(
        default=dict, help_text="Copy of the workflow definition this session runs."
    )
    status = models.CharField(
        max_length=20, choices=SessionStatus.choices, default=SessionStatus.CREATED
    )
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    # Of input_tokens / of output_tokens (docs/engine.md, "Usage and cost").
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    # The priced usage only: price_unknown says some usage had no price (shown, never $0).
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=ZERO)
    price_unknown = models.BooleanField(default=False)
    budget_usd = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True,
        validators=[MinValueValidator(MICRO_DOLLAR)],
        help_text="Spend limit in USD: the run holds and asks a controller when it is reached "
        "(empty: no limit). Defaults to the workflow's budget.",
    )
    budget_state = models.CharField(
        max_length=10, choices=BudgetState.choices, default=BudgetState.OK
    )
    nodes_total = models.PositiveIntegerField(default=0)
    nodes_completed = models.PositiveIntegerField(default=0)
    nodes_failed = models.PositiveIntegerField(default=0)
    # Run lease: a runner (web process in embedded mode, or a worker) claims the run and
    # renews the lease while it executes; an expired lease lets another runner take over.
    run_requested = models.BooleanField(default=False)
    lease_owner = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Fencing token: advanced by every claim; every run write must carry the current one.
    lease_generation = models.BigIntegerField(default=0)
    # Lineage (docs/replay.md): a fork names the session and node it was forked from; what
    # was changed for that node is in ``fork_changes`` (its effect is in the definition copy).
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks",
        help_text="The session this one was forked from.",
    )
    fork_node_id = models.CharField(max_length=64, blank=True, default="")
    fork_changes = models.JSONField(
        default=dict, blank=True,
        help_text="What the fork changed for its node: instruction, prompt, model, provider.",
    )
    # The first runner's OpenTelemetry run span (W3C traceparent): a take-over continues it.
    trace_parent = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-created_at"], name="session_created"),
            models.Index(fields=["owner", "-created_at"], name="session_owner_created"),
            models.Index(fields=["status", "-created_at"], name="session_status_created"),
            models.Index(fields=["run_requested", "lease_expires_at"], name="session_run_queue"),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.workflow_slug}, {self.status})"

    def get_absolute_url(self) -> str:
        return reverse("sessions:room", kwargs={"session_id": self.id})

    @property
    def is_fork(self) -> bool:
        return self.parent_id is not None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_SESSION_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        end = self.finished_at or self.updated_at
        return max(0.0, (end - self.started_at).total_seconds())


# How a user stands in a session (what the sessions list and the room show): a protocol word.
SessionRole = Role


class SessionShare(models.Model):
    """A user the owner let in: watch only, or watch and control."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="shares")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shared_sessions"
    )
    can_control = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "user"], name="share_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} on {self.session_id} ({self.role})"

    @property
    def role(self) -> Role:
        return Role.CONTROLLER if self.can_control else Role.VIEWER


class ShareLink(models.Model):
    """A link that lets any logged-in user join a session with ``role``.

    Only the SHA-256 digest of its token is stored: the token is shown once, when the link is
    made, and a database leak does not hand out working links."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="share_links")
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    role = models.CharField(
        max_length=20, choices=[(r.value, r.label) for r in Role if r in MEMBER_ROLES]
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    max_uses = models.PositiveIntegerField(
        null=True, blank=True, help_text="How many people may join through it (empty: any number)."
    )
    uses = models.PositiveIntegerField(default=0)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "-created_at"]

    def __str__(self) -> str:
        return f"link #{self.pk} to {self.session_id} ({self.role})"

    def unusable_because(self, now: Any) -> str | None:
        """Why nobody can join through it now, or None."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.max_uses is not None and self.uses >= self.max_uses:
            return "used up"
        return None


class ShareLinkJoin(models.Model):
    """Someone who joined a session through a link (the link's list of who joined)."""

    link = models.ForeignKey(ShareLink, on_delete=models.CASCADE, related_name="joins")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=20)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["link", "joined_at"]
        constraints = [
            models.UniqueConstraint(fields=["link", "user"], name="share_link_join_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} through link #{self.link_id}"


class NodeState(models.Model):
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="node_states")
    node_id = models.CharField(max_length=64)
    node_type = models.CharField(max_length=20, choices=NodeType.choices, default=NodeType.AGENT)
    agent_id = models.CharField(max_length=64, blank=True, default="")
    status = models.CharField(
        max_length=20, choices=NodeStatus.choices, default=NodeStatus.PENDING
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    rounds = models.PositiveIntegerField(default=0)
    output = models.TextField(
        blank=True, default="", help_text="Final answer handed to downstream nodes."
    )
    inherited = models.BooleanField(
        default=False, help_text="Copied from the parent session by a fork; never run here."
    )

    class Meta:
        ordering = ["session", "id"]
        constraints = [
            models.UniqueConstraint(fields=["session", "node_id"], name="nodestate_unique_node")
        ]

    def __str__(self) -> str:
        return f"{self.node_id}: {self.status}"


class TokenUsage(models.Model):
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="usages")
    node_id = models.CharField(max_length=64)
    agent_id = models.CharField(max_length=64)
    model = models.CharField(max_length=100)
    round = models.PositiveIntegerField(default=1)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0, help_text="Of input: read from the cache.")
    cache_write_tokens = models.BigIntegerField(default=0, help_text="Of input: written to the cache.")
    reasoning_tokens = models.BigIntegerField(default=0, help_text="Of output: reasoning.")
    estimated = models.BooleanField(
        default=False, help_text="The server reported no usage: counted by the word rule."
    )
    # Null: the model had no known price ("price unknown", never $0).
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    # The price it was charged at (USD per million tokens, by token type) and where it came
    # from, so a later price change never rewrites a past cost.
    price = models.JSONField(default=dict, blank=True)
    price_source = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    # A fork's copy of its parent's row: shown with the node, never in the session's totals.
    inherited = models.BooleanField(default=False)

    class Meta:
        ordering = ["session", "id"]
        constraints = [
            # One row per node run: a take-over after a crash can never count a node twice.
            models.UniqueConstraint(
                fields=["session", "node_id", "round"], name="usage_unique_node_round"
            )
        ]

    def __str__(self) -> str:
        return f"{self.node_id} {self.model}: {self.input_tokens}/{self.output_tokens}"


class Message(models.Model):
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="messages")
    kind = models.CharField(max_length=10, choices=MessageKind.choices)
    node_id = models.CharField(max_length=64, blank=True, default="")
    agent_id = models.CharField(max_length=64, blank=True, default="")
    round = models.PositiveIntegerField(default=1)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    text = models.TextField(blank=True, default="")
    thinking = models.TextField(blank=True, default="")
    is_final = models.BooleanField(default=False)
    inherited = models.BooleanField(default=False, help_text="Copied from the parent by a fork.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["session", "created_at", "id"]
        indexes = [
            models.Index(fields=["session", "node_id"], name="message_session_node"),
            models.Index(fields=["session", "created_at"], name="message_session_created"),
        ]

    def __str__(self) -> str:
        who = self.agent_id or (self.user and self.user.get_username()) or "?"
        return f"{who}: {self.text[:40]}"


class HumanReview(models.Model):
    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="reviews")
    node_id = models.CharField(max_length=64)
    reviewed_node_id = models.CharField(max_length=64, blank=True, default="")
    round = models.PositiveIntegerField(default=1)
    reason = models.TextField()
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=ReviewStatus.choices, default=ReviewStatus.PENDING
    )
    decision = models.CharField(max_length=10, blank=True, default="", choices=ReviewDecision.choices)
    comment = models.TextField(blank=True, default="")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when the review approves one tool call of an agent node (not a review node's round).
    call_id = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["session", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "node_id", "round", "call_id"], name="review_unique_round_call"
            )
        ]

    def __str__(self) -> str:
        return f"review {self.node_id} #{self.round}: {self.status} {self.decision}"


class CommandReceipt(models.Model):
    """A command id already executed for a session: a resent command is acked, not re-run."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="receipts")
    command_id = models.CharField(max_length=64)
    cmd = models.CharField(max_length=30)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["session", "command_id"], name="receipt_unique_command"
            )
        ]

    def __str__(self) -> str:
        return f"{self.cmd} {self.command_id}"


class RunWriteReceipt(models.Model):
    """A runner's write that committed: a retry with the same key (its COMMIT's reply was lost)
    returns ``result`` instead of writing, and logging its events, a second time."""

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="write_receipts")
    key = models.CharField(max_length=40)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "key"], name="run_write_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.session_id} {self.key}"


class AguiThread(models.Model):
    """An AG-UI client's thread id for a session (``threadId`` when it is not the session's
    own id), and the AG-UI message ids already taken in as participants' messages."""

    session = models.OneToOneField(Session, on_delete=models.CASCADE, related_name="agui_thread")
    thread_id = models.CharField(max_length=200, unique=True)
    seen_message_ids = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"AG-UI thread {self.thread_id}"
# Operators' model prices and tool calls (in their own modules for size; imported here so
# Django finds them).
from sessions_app.model_prices import ModelPrice  # noqa: E402, F401
from sessions_app.model_tool_calls import ToolCall  # noqa: E402, F401
