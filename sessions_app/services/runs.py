"""Entering and ending a run, including what a runner taking over after a crash must settle.

The event log is the truth of what viewers saw: a dead runner's half-streamed messages are
closed with the text folded from the log (the row only has the last partial save), so a
late joiner's snapshot, the admin and the next runner all read the same transcript.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from realtime.eventlog import read_envelopes
from realtime.publisher import publish_sync
from realtime.state import fold
from realtime.vocabulary import (
    ACTIVE_SESSION_STATUSES,
    FINISHED_SESSION_STATUSES,
    EventName,
    NodeStatus,
    SessionStatus,
)
from sessions_app.models import HumanReview, Message, MessageKind, Session
from sessions_app.prices import budget_start
from sessions_app.services import observed
from sessions_app.services.budgets import budget_event
from sessions_app.services.events import node_state_event
from sessions_app.services.leases import lock_run
from sessions_app.services.nodes import recount_nodes
from sessions_app.services.receipts import forget_receipts, idempotent
from sessions_app.services.tools import interrupt_open_calls
from sessions_app.services.usage import apply_session_totals
from workflows.budget import BUDGET_REVIEW_KEY
from workflows.providers.base import TOKEN_FIELDS
from workflows.store import RunStart
from workflows.vocabulary import ReviewStatus

# A dead runner left these half-done; ``stopped`` in a session that is still active was
# abandoned by a runner that shut down.
INTERRUPTED_STATUSES = (NodeStatus.RUNNING, NodeStatus.PAUSED, NodeStatus.STOPPED)


@idempotent
@transaction.atomic
def run_begin(*, session_id: Any, fence: int) -> RunStart | None:
    """Enter the run: a fresh start publishes execution:started; a take-over settles what a
    dead runner left half-done so the interrupted nodes can run again cleanly."""
    session = lock_run(session_id, fence)
    if session.status in FINISHED_SESSION_STATUSES:
        return None
    fresh = session.status == SessionStatus.CREATED
    interrupted: list[str] = []
    if fresh:
        nodes = list(session.node_states.order_by("id"))
        session.status = SessionStatus.RUNNING
        session.started_at = timezone.now()
        session.save(update_fields=["status", "started_at", "updated_at"])
        publish_sync(
            session_id=session.pk,
            event=EventName.EXECUTION_STARTED,
            data={"workflow": session.workflow_slug, "nodes": [n.node_id for n in nodes]},
        )
        if session.budget_usd is not None:
            budget_event(session)
    else:
        interrupted = _settle_interrupted(session)
        observed.run_taken_over()  # only a runner continuing another's run finds it begun
        nodes = list(session.node_states.all())
    return RunStart(
        status=session.status,
        fresh=fresh,
        completed={n.node_id: n.output for n in nodes if n.status == NodeStatus.COMPLETED},
        node_status={n.node_id: n.status for n in nodes},
        rounds={n.node_id: n.rounds for n in nodes},
        outputs={n.node_id: n.output for n in nodes},
        interrupted=frozenset(interrupted),
        budget=budget_start(session),
        trace_parent=session.trace_parent,
    )


@transaction.atomic
def run_trace(*, session_id: Any, fence: int, traceparent: str) -> None:
    """The first runner's run span: a runner taking over continues its trace."""
    session = lock_run(session_id, fence)
    if not session.trace_parent:
        session.trace_parent = traceparent[:100]
        session.save(update_fields=["trace_parent", "updated_at"])


def _settle_interrupted(session: Session) -> list[str]:
    """Close what a dead runner left open and put its nodes back to pending.

    A node the dead runner was streaming (or holding paused) gets its open message finalised
    with the text viewers were actually sent, a ``stopped`` state saying why, then
    ``pending``. Returns the node ids reset."""
    # An agent node waiting for a tool call's approval is half-done too (a review node
    # waiting is not: its review is asked again as it stands).
    approving = HumanReview.objects.filter(
        session=session, status=ReviewStatus.PENDING
    ).exclude(call_id="").values_list("node_id", flat=True)
    interrupted = list(
        session.node_states.select_for_update().filter(
            Q(status__in=INTERRUPTED_STATUSES)
            | Q(status=NodeStatus.WAITING_REVIEW, node_id__in=list(approving))
        )
    )
    if not interrupted:
        return []
    state = fold(read_envelopes(str(session.pk)))
    now = timezone.now()
    interrupt_open_calls(session, [node.node_id for node in interrupted])
    for node in interrupted:
        _close_open_message(session, node.node_id, _streaming(state, node.node_id))
        if node.status != NodeStatus.STOPPED:
            node.status = NodeStatus.STOPPED
            node.finished_at = now
            node.save(update_fields=["status", "finished_at"])
            node_state_event(
                session.pk, node, error="interrupted: the runner stopped; running it again"
            )
        node.status = NodeStatus.PENDING
        node.error = ""
        node.finished_at = None
        node.save(update_fields=["status", "error", "finished_at"])
        node_state_event(session.pk, node)
    if (session.status == SessionStatus.WAITING_REVIEW
            and not session.reviews.filter(status=ReviewStatus.PENDING).exists()):
        # It waited only for an approval the take-over cancelled: the run goes on.
        session.status = SessionStatus.RUNNING
        session.save(update_fields=["status", "updated_at"])
        publish_sync(session_id=session.pk, event=EventName.NODE_RESUMED, data={"node_id": None})
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


def _failure_text(session: Session) -> str:
    """Name the node that made the run fail, so execution:failed says why."""
    failed = session.node_states.filter(status=NodeStatus.FAILED).order_by("id").first()
    if failed is not None:
        return f"node {failed.node_id!r} failed: {failed.error or 'no reason given'}"[:2000]
    other = session.node_states.exclude(status=NodeStatus.COMPLETED).order_by("id").first()
    if other is not None:
        return f"node {other.node_id!r} did not complete ({other.status})"
    return "the run failed"


@idempotent
@transaction.atomic
def run_finish(*, session_id: Any, fence: int, error: str = "") -> str | None:
    """End the run: completed when every node completed, failed otherwise (a stopped session
    stays stopped). Totals are recomputed from the usage rows so they always equal their sum."""
    session = lock_run(session_id, fence)
    ending = bool(session.lease_owner)  # a second call (the runner crashed after) finds none
    forget_receipts(session_id=session_id)
    session.run_requested = False
    session.lease_owner = ""
    session.lease_expires_at = None
    totals = apply_session_totals(session)
    nodes = recount_nodes(session)
    _close_open_messages(session)
    if session.budget_usd is not None:  # (only a session with a budget asks about it)
        # A budget reached by the last node's usage has nothing left to hold.
        session.reviews.filter(
            node_id="", call_id=BUDGET_REVIEW_KEY, status=ReviewStatus.PENDING
        ).update(status=ReviewStatus.CANCELLED)
    fields = [
        "run_requested", "lease_owner", "lease_expires_at", *totals,
        "nodes_completed", "nodes_failed", "updated_at",
    ]
    if session.status in ACTIVE_SESSION_STATUSES:
        unfinished = session.nodes_completed < nodes
        session.finished_at = timezone.now()
        if unfinished or error:
            session.status = SessionStatus.FAILED
            session.error = error or _failure_text(session)
            publish_sync(
                session_id=session.pk, event=EventName.EXECUTION_FAILED,
                data={"error": session.error},
            )
        else:
            session.status = SessionStatus.COMPLETED
            publish_sync(
                session_id=session.pk, event=EventName.EXECUTION_COMPLETED,
                data={
                    **{name: getattr(session, name) for name in TOKEN_FIELDS},
                    "cost_usd": float(session.cost_usd),
                    "price_unknown": session.price_unknown,
                },
            )
        fields += ["status", "error", "finished_at"]
    session.save(update_fields=fields)
    if ending:
        observed.run_ended(session)
    return session.status
