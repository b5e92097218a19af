"""What the workflow runner persists, one transaction per node boundary.

Every function stores the rows and the events describing them together (the events are
broadcast after commit), so viewers, the admin and a runner taking over after a crash all
read the same truth. Nothing here is called per token: partial text is saved at most about
once a second, everything else at node boundaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from realtime.eventlog import read_envelopes
from realtime.publisher import publish_sync
from realtime.state import fold
from sessions_app.models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    HumanReview,
    Message,
    MessageKind,
    NodeState,
    ReviewStatus,
    Session,
    SessionStatus,
    TokenUsage,
)
from sessions_app.services import review_deadline

ZERO = Decimal("0")


def _num(value: Decimal) -> float:
    return float(value)


def _node_event(session_id: Any, node: NodeState, **extra: Any) -> None:
    data = {"node_id": node.node_id, "status": node.status, "agent_id": node.agent_id or None}
    data.update(extra)
    publish_sync(session_id=session_id, event="node_state_change", node_id=node.node_id, data=data)


def _node(session_id: Any, node_id: str) -> NodeState:
    return NodeState.objects.select_for_update().get(session_id=session_id, node_id=node_id)


@dataclass(frozen=True)
class RunStart:
    """What a runner needs to continue a run: the rows, as the previous runner left them."""

    status: str
    fresh: bool
    completed: dict[str, str]  # node_id -> output, for completed nodes
    node_status: dict[str, str]
    rounds: dict[str, int]
    outputs: dict[str, str] = field(default_factory=dict)  # last completed answer of every node
    interrupted: frozenset[str] = frozenset()  # nodes a dead runner left half-done


def run_begin(*, session_id: Any) -> RunStart | None:
    """Enter the run: a fresh start publishes execution:started; a take-over settles what a
    dead runner left half-done (its streaming messages are closed with the exact text the
    viewers saw, from the event log) so the interrupted nodes can run again cleanly."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        if session.status in FINISHED_STATUSES:
            return None
        fresh = session.status == SessionStatus.CREATED
        interrupted: list[str] = []
        if fresh:
            session.status = SessionStatus.RUNNING
            session.started_at = timezone.now()
            session.save(update_fields=["status", "started_at", "updated_at"])
            node_ids = list(session.node_states.order_by("id").values_list("node_id", flat=True))
            publish_sync(
                session_id=session.pk,
                event="execution:started",
                data={"workflow": session.workflow_slug, "nodes": node_ids},
            )
        else:
            interrupted = _settle_interrupted(session)
        nodes = list(session.node_states.all())
        return RunStart(
            status=session.status,
            fresh=fresh,
            completed={n.node_id: n.output for n in nodes if n.status == "completed"},
            node_status={n.node_id: n.status for n in nodes},
            rounds={n.node_id: n.rounds for n in nodes},
            outputs={n.node_id: n.output for n in nodes},
            interrupted=frozenset(interrupted),
        )


INTERRUPTED_STATUSES = ("running", "paused", "stopped")


def _settle_interrupted(session: Session) -> list[str]:
    """Close what a dead runner left open and put its nodes back to pending.

    A node the dead runner was streaming (or holding paused) gets its open message finalised
    with the text viewers were actually sent (folded from the event log, which is the truth;
    the row only has the last partial save), a ``stopped`` state saying why, then
    ``pending``. A ``stopped`` node in a session that is still active was abandoned by a
    runner that shut down and is reset the same way. Returns the node ids reset."""
    interrupted = list(
        session.node_states.select_for_update().filter(status__in=INTERRUPTED_STATUSES)
    )
    if not interrupted:
        return []
    state = fold(read_envelopes(str(session.pk)))
    now = timezone.now()
    for node in interrupted:
        _close_open_message(session, node.node_id, _streaming(state, node.node_id))
        if node.status != "stopped":
            node.status = "stopped"
            node.finished_at = now
            node.save(update_fields=["status", "finished_at"])
            _node_event(session.pk, node, error="interrupted: the runner stopped; running it again")
        node.status = "pending"
        node.error = ""
        node.finished_at = None
        node.save(update_fields=["status", "error", "finished_at"])
        _node_event(session.pk, node)
    return [node.node_id for node in interrupted]


def _streaming(state: dict[str, Any], node_id: str) -> dict[str, Any] | None:
    """The node's message the log shows still streaming (folded), if any."""
    streamed = [m for m in state["messages"] if m["node_id"] == node_id]
    # A final message in the log belongs to an earlier round: this round never streamed.
    return streamed[-1] if streamed and not streamed[-1]["final"] else None


def _close_open_message(session: Session, node_id: str, streamed: dict[str, Any] | None) -> None:
    message = (
        Message.objects.filter(session=session, node_id=node_id, is_final=False)
        .order_by("-id")
        .first()
    )
    if message is None:
        return
    if streamed is not None:
        message.text = streamed["text"]
        message.thinking = streamed["thinking"]
    message.is_final = True
    message.save(update_fields=["text", "thinking", "is_final", "updated_at"])


def node_begin(*, session_id: Any, node_id: str, agent_id: str, round: int) -> int:
    """Node starts streaming: its status and a new transcript message; returns the message id."""
    with transaction.atomic():
        node = _node(session_id, node_id)
        node.status = "running"
        node.error = ""
        node.rounds = round
        if node.started_at is None:
            node.started_at = timezone.now()
        node.finished_at = None
        node.save(update_fields=["status", "error", "rounds", "started_at", "finished_at"])
        message = _open_message(session_id, node_id, round) or Message.objects.create(
            session_id=session_id, kind=MessageKind.AGENT, node_id=node_id, agent_id=agent_id,
            round=round,
        )
        _node_event(session_id, node)
        return message.pk


def _open_message(session_id: Any, node_id: str, round: int) -> Message | None:
    """The message an earlier node_begin of this round created although it reported an error
    (its COMMIT's reply was lost, and the engine retried): reused, never a second one. Any
    other open message was closed before (stop, failure, take-over settle)."""
    return (
        Message.objects.filter(
            session_id=session_id, kind=MessageKind.AGENT, node_id=node_id, round=round,
            is_final=False,
        )
        .order_by("-id")
        .first()
    )


def node_set_status(*, session_id: Any, node_id: str, status: str) -> None:
    """Pause/resume of one node at a chunk boundary."""
    with transaction.atomic():
        node = _node(session_id, node_id)
        node.status = status
        node.save(update_fields=["status"])
        _node_event(session_id, node)


def message_save_partial(*, message_id: int, text: str, thinking: str) -> None:
    Message.objects.filter(pk=message_id, is_final=False).update(
        text=text, thinking=thinking, updated_at=timezone.now()
    )


def _session_totals(session: Session) -> tuple[int, int, Decimal]:
    totals = TokenUsage.objects.filter(session=session).aggregate(
        i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd")
    )
    return totals["i"] or 0, totals["o"] or 0, totals["c"] or ZERO


def _recount(session: Session) -> None:
    session.nodes_completed = session.node_states.filter(status="completed").count()
    session.nodes_failed = session.node_states.filter(status="failed").count()


def _publish_usage(
    *, session: Session, node_id: str, agent_id: str, model: str, final: bool,
    extra: tuple[int, int, Decimal],
) -> None:
    """token_usage: the node's stored rows plus ``extra`` (the live part of a running node)."""
    done = TokenUsage.objects.filter(session=session, node_id=node_id).aggregate(
        i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd")
    )
    more_in, more_out, more_cost = extra
    publish_sync(
        session_id=session.pk,
        event="token_usage",
        node_id=node_id,
        data={
            "node_id": node_id,
            "agent_id": agent_id,
            "model": model,
            "input_tokens": (done["i"] or 0) + more_in,
            "output_tokens": (done["o"] or 0) + more_out,
            "estimated_cost_usd": _num((done["c"] or ZERO) + more_cost),
            "final": final,
            "session_input_tokens": session.input_tokens + more_in,
            "session_output_tokens": session.output_tokens + more_out,
            "session_cost_usd": _num(session.cost_usd + more_cost),
        },
    )


def node_complete(
    *,
    session_id: Any,
    node_id: str,
    agent_id: str,
    round: int,
    model: str,
    message_id: int,
    text: str,
    thinking: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: Decimal,
) -> None:
    """Node done: final message, output for downstream nodes, usage row, live session totals."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        node = _node(session_id, node_id)
        Message.objects.filter(pk=message_id).update(
            text=text, thinking=thinking, is_final=True, updated_at=timezone.now()
        )
        TokenUsage.objects.update_or_create(
            session=session, node_id=node_id, round=round,
            defaults={
                "agent_id": agent_id, "model": model, "input_tokens": input_tokens,
                "output_tokens": output_tokens, "cost_usd": cost_usd,
            },
        )
        node.status = "completed"
        node.output = text
        node.finished_at = timezone.now()
        node.save(update_fields=["status", "output", "finished_at"])
        session.input_tokens, session.output_tokens, session.cost_usd = _session_totals(session)
        _recount(session)
        session.save(
            update_fields=[
                "input_tokens", "output_tokens", "cost_usd", "nodes_completed", "nodes_failed",
                "updated_at",
            ]
        )
        _publish_usage(
            session=session, node_id=node_id, agent_id=agent_id, model=model, final=True,
            extra=(0, 0, ZERO),
        )
        _node_event(session.pk, node)


def usage_progress(
    *,
    session_id: Any,
    node_id: str,
    agent_id: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cost_usd: Decimal,
) -> None:
    """Periodic usage of a long node (not stored as a usage row until the node ends)."""
    with transaction.atomic():
        session = Session.objects.get(pk=session_id)
        _publish_usage(
            session=session, node_id=node_id, agent_id=agent_id, model=model, final=False,
            extra=(input_tokens, output_tokens, cost_usd),
        )


def node_fail(
    *, session_id: Any, node_id: str, error: str, code: str, message_id: int | None,
    text: str = "", thinking: str = "",
) -> None:
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        node = _node(session_id, node_id)
        if message_id is not None:
            Message.objects.filter(pk=message_id).update(
                text=text, thinking=thinking, is_final=True, updated_at=timezone.now()
            )
        node.status = "failed"
        node.error = error[:2000]
        node.finished_at = timezone.now()
        node.save(update_fields=["status", "error", "finished_at"])
        _recount(session)
        session.save(update_fields=["nodes_completed", "nodes_failed", "updated_at"])
        publish_sync(
            session_id=session.pk, event="error", node_id=node_id,
            data={"node_id": node_id, "error": error[:2000], "code": code},
        )
        _node_event(session.pk, node, error=error[:2000])


def node_stopped(
    *, session_id: Any, node_id: str, message_id: int | None, text: str = "", thinking: str = ""
) -> None:
    with transaction.atomic():
        node = _node(session_id, node_id)
        if message_id is not None:
            Message.objects.filter(pk=message_id).update(
                text=text, thinking=thinking, is_final=True, updated_at=timezone.now()
            )
        if node.status in ("completed", "failed", "skipped", "stopped"):
            return
        node.status = "stopped"
        node.finished_at = timezone.now()
        node.save(update_fields=["status", "finished_at"])
        _node_event(session_id, node)


def nodes_skip(*, session_id: Any, node_ids: list[str], reason: str) -> None:
    """Mark nodes that will never run (a dependency failed); a review still waiting counts."""
    with transaction.atomic():
        for node_id in node_ids:
            node = _node(session_id, node_id)
            if node.status not in ("pending", "waiting_review"):
                continue
            node.status = "skipped"
            node.error = reason
            node.finished_at = timezone.now()
            node.save(update_fields=["status", "error", "finished_at"])
            _node_event(session_id, node, error=reason)
        HumanReview.objects.filter(
            session_id=session_id, node_id__in=node_ids, status=ReviewStatus.PENDING
        ).update(status=ReviewStatus.CANCELLED)


def _seconds_left(review: HumanReview) -> int | None:
    if review.deadline is None:
        return None
    return max(1, math.ceil((review.deadline - timezone.now()).total_seconds()))


def review_open(
    *, session_id: Any, node_id: str, reviewed_node_id: str, round: int, reason: str,
    timeout: int | None,
) -> HumanReview:
    """Ask a human: the session waits (unless it is paused, in which case it stays paused).

    Idempotent per (node, round): a runner taking over re-asks a review that is still
    pending, keeping the original deadline (the ``timeout`` sent is what is left of it), and
    returns an already decided review untouched."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        review, created = HumanReview.objects.get_or_create(
            session=session, node_id=node_id, round=round,
            defaults={
                "reviewed_node_id": reviewed_node_id, "reason": reason,
                "timeout_seconds": timeout, "deadline": review_deadline(timeout),
            },
        )
        if review.status != ReviewStatus.PENDING:
            return review
        node = _node(session_id, node_id)
        node.status = "waiting_review"
        node.rounds = round
        if node.started_at is None:
            node.started_at = timezone.now()
        node.save(update_fields=["status", "rounds", "started_at"])
        if session.status == SessionStatus.RUNNING:
            session.status = SessionStatus.WAITING_REVIEW
            session.save(update_fields=["status", "updated_at"])
        _node_event(session.pk, node)
        publish_sync(
            session_id=session.pk, event="human_interaction_required", node_id=node_id,
            data={
                "node_id": node_id, "reason": review.reason,
                "timeout": timeout if created else _seconds_left(review),
                "reviewed_node_id": reviewed_node_id, "round": round,
            },
        )
        return review


def review_auto_approve(
    *, session_id: Any, node_id: str, reviewed_node_id: str, round: int, reason: str, comment: str
) -> HumanReview:
    """Record the automatic approval once the rejection rounds are spent.

    Nobody is asked (no human_interaction_required): the round is stored as decided by
    nobody, with the note as its comment, and announced with review_submitted."""
    with transaction.atomic():
        Session.objects.select_for_update().get(pk=session_id)
        review, created = HumanReview.objects.get_or_create(
            session_id=session_id, node_id=node_id, round=round,
            defaults={
                "reviewed_node_id": reviewed_node_id, "reason": reason,
                "status": ReviewStatus.DECIDED, "decision": "approve", "comment": comment,
                "decided_at": timezone.now(),
            },
        )
        if created:
            publish_sync(
                session_id=session_id, event="review_submitted", node_id=node_id,
                data={"node_id": node_id, "decision": "approve", "comment": comment, "by": None,
                      "timed_out": False},
            )
        return review


def answered_after(*, session_id: Any, node_id: str, moment: Any) -> bool:
    """Did the node complete an answer after ``moment`` (a review decision)? Lets a runner
    that takes over tell whether the retry a rejection asked for already happened."""
    return NodeState.objects.filter(
        session_id=session_id, node_id=node_id, status="completed", finished_at__gt=moment
    ).exists()


def review_comments(*, session_id: Any, node_id: str) -> list[str]:
    """Non-empty comments of a review node's approved rounds, for the nodes after it."""
    return [
        comment
        for comment in HumanReview.objects.filter(
            session_id=session_id, node_id=node_id, decision="approve"
        ).order_by("round").values_list("comment", flat=True)
        if comment
    ]


def review_state(*, session_id: Any, node_id: str, round: int) -> HumanReview | None:
    return HumanReview.objects.filter(session_id=session_id, node_id=node_id, round=round).first()


def review_close(*, session_id: Any, node_id: str) -> None:
    with transaction.atomic():
        node = _node(session_id, node_id)
        node.status = "completed"
        node.finished_at = timezone.now()
        node.save(update_fields=["status", "finished_at"])
        session = Session.objects.select_for_update().get(pk=session_id)
        _recount(session)
        session.save(update_fields=["nodes_completed", "nodes_failed", "updated_at"])
        _node_event(session_id, node)


def user_messages_before(*, session_id: Any, before_id: int | None = None) -> list[dict[str, str]]:
    """Users' messages an agent starting now may read."""
    query = Message.objects.filter(session_id=session_id, kind=MessageKind.USER)
    if before_id is not None:
        query = query.filter(pk__lt=before_id)
    return [
        {"user": user or "user", "text": text}
        for user, text in query.order_by("id").values_list("user__username", "text")
    ]


def session_status(*, session_id: Any) -> str | None:
    return Session.objects.filter(pk=session_id).values_list("status", flat=True).first()


def _failure_text(session: Session) -> str:
    """Name the node that made the run fail, so execution:failed says why."""
    failed = session.node_states.filter(status="failed").order_by("id").first()
    if failed is not None:
        return f"node {failed.node_id!r} failed: {failed.error or 'no reason given'}"[:2000]
    other = session.node_states.exclude(status="completed").order_by("id").first()
    if other is not None:
        return f"node {other.node_id!r} did not complete ({other.status})"
    return "the run failed"


def _close_open_messages(session: Session) -> None:
    """A run ending with a message still open (a node whose last write kept failing through a
    database outage) closes it with the text the log holds, as a take-over would, so rows and
    log agree. Normal runs have none: the fold is only read when one is found."""
    open_nodes = set(
        Message.objects.filter(session=session, kind=MessageKind.AGENT, is_final=False)
        .values_list("node_id", flat=True)
    )
    if not open_nodes:
        return
    state = fold(read_envelopes(str(session.pk)))
    for node_id in open_nodes:
        _close_open_message(session, node_id, _streaming(state, node_id))


def run_finish(*, session_id: Any, error: str = "") -> str | None:
    """End the run: completed when every node completed, failed otherwise (a stopped session
    stays stopped). Totals are recomputed from the usage rows so they always equal their sum."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        session.run_requested = False
        session.lease_owner = ""
        session.lease_expires_at = None
        session.input_tokens, session.output_tokens, session.cost_usd = _session_totals(session)
        _recount(session)
        _close_open_messages(session)
        fields = [
            "run_requested", "lease_owner", "lease_expires_at", "input_tokens", "output_tokens",
            "cost_usd", "nodes_completed", "nodes_failed", "updated_at",
        ]
        if session.status in ACTIVE_STATUSES:
            unfinished = session.node_states.exclude(status="completed").exists()
            session.finished_at = timezone.now()
            if unfinished or error:
                session.status = SessionStatus.FAILED
                session.error = error or _failure_text(session)
                publish_sync(
                    session_id=session.pk, event="execution:failed",
                    data={"error": session.error},
                )
            else:
                session.status = SessionStatus.COMPLETED
                publish_sync(
                    session_id=session.pk, event="execution:completed",
                    data={
                        "input_tokens": session.input_tokens,
                        "output_tokens": session.output_tokens,
                        "cost_usd": _num(session.cost_usd),
                    },
                )
            fields += ["status", "error", "finished_at"]
        session.save(update_fields=fields)
        return session.status
