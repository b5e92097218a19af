"""Human reviews: asking (for the runner), deciding (for people and the timeout), closing.

A review round is one ``HumanReview`` row, unique per (node, round), so asking again after a
take-over finds the round it asked before instead of asking twice.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from realtime.publisher import publish_sync
from realtime.vocabulary import EventName, NodeStatus, ReviewDecision, SessionStatus
from sessions_app.models import HumanReview
from sessions_app.services.budgets import budget_decided
from sessions_app.services.errors import InvalidData, InvalidState, NotFound, ServiceError
from sessions_app.services.events import node_state_event
from sessions_app.services.leases import lock_run
from sessions_app.services.nodes import locked_node, recount_nodes
from sessions_app.services.receipts import idempotent
from sessions_app.services.sessions import locked_session
from workflows import control
from workflows.budget import BUDGET_REVIEW_KEY
from workflows.control import RunAction
from workflows.vocabulary import ReviewStatus

log = logging.getLogger(__name__)


def _review_event(
    session_id: Any, *, node_id: str, decision: str, comment: str, by: str | None, timed_out: bool,
    call_id: str = "",
) -> None:
    data = {"node_id": node_id, "decision": decision, "comment": comment, "by": by,
            "timed_out": timed_out}
    if call_id:
        data["tool_call_id"] = call_id
    publish_sync(
        session_id=session_id, event=EventName.REVIEW_SUBMITTED, node_id=node_id, data=data
    )


@transaction.atomic
def review_submit(
    *,
    session_id: Any,
    user: AbstractBaseUser | None,
    node_id: str,
    decision: str,
    comment: str = "",
    timed_out: bool = False,
    call_id: str | None = None,
    budget_usd: Decimal | None = None,
) -> HumanReview:
    """Decide the pending review of a node (or, with ``call_id``, the approval of one of its
    tool calls; with node "" the budget request, whose approval needs ``budget_usd``); the
    runner continues, sends the agent back, runs or denies the tool, or goes on with the
    raised budget (a rejected budget request stops the session).

    Without ``call_id`` the node's pending review is decided, whichever kind it is."""
    if decision not in ReviewDecision.values:
        raise InvalidData("decision must be approve or reject")
    comment = (comment or "").strip()
    session = locked_session(session_id)
    pending = HumanReview.objects.select_for_update().filter(
        session=session, node_id=node_id, status=ReviewStatus.PENDING
    )
    if call_id is not None:
        pending = pending.filter(call_id=call_id)
    review = pending.order_by("-round", "-id").first()
    if review is None:
        if node_id == "":
            raise InvalidState("the session is not waiting for a budget decision")
        if not session.node_states.filter(node_id=node_id).exists():
            raise NotFound(f"no node {node_id!r} in this session")
        if call_id is not None:
            raise InvalidState(f"tool call {call_id!r} of {node_id!r} is not waiting for approval")
        raise InvalidState(f"node {node_id!r} is not waiting for a review")
    # A rejected tool call needs no comment: the model is told the reviewer denied it.
    if decision == ReviewDecision.REJECT and not comment and not timed_out and not review.call_id:
        raise InvalidData("a rejection needs a comment for the agent")
    if session.status not in (
        SessionStatus.WAITING_REVIEW, SessionStatus.PAUSED, SessionStatus.RUNNING
    ):
        raise InvalidState(f"cannot review while the session is {session.status}")
    review.status = ReviewStatus.TIMED_OUT if timed_out else ReviewStatus.DECIDED
    review.decision = decision
    review.comment = comment
    review.decided_by = user
    review.decided_at = timezone.now()
    review.save()
    budget = review.call_id == BUDGET_REVIEW_KEY and review.node_id == ""
    if budget and decision == ReviewDecision.APPROVE:  # refused before anything is logged
        budget_decided(session=session, review=review, user=user, budget_usd=budget_usd,
                       timed_out=timed_out)
    _review_event(
        session.pk, node_id=node_id, decision=decision, comment=comment,
        by=user.get_username() if user is not None else None, timed_out=timed_out,
        call_id="" if budget else review.call_id,
    )
    if budget and decision == ReviewDecision.REJECT:
        budget_decided(session=session, review=review, user=user, budget_usd=None,
                       timed_out=timed_out)
        return review
    others_pending = session.reviews.filter(status=ReviewStatus.PENDING).exists()
    if session.status == SessionStatus.WAITING_REVIEW and not others_pending:
        session.status = SessionStatus.RUNNING
        session.save(update_fields=["status", "updated_at"])
        publish_sync(session_id=session.pk, event=EventName.NODE_RESUMED, node_id=node_id,
                     data={"node_id": node_id})
    transaction.on_commit(lambda: control.send_run_control(session.pk, RunAction.REVIEW, node_id=node_id))
    return review


@idempotent
@transaction.atomic
def review_decide_default(
    *, session_id: Any, fence: int, node_id: str, decision: str, call_id: str | None = None
) -> bool:
    """The review's deadline passed: record the definition's default decision as timed out.
    False if it cannot be recorded now (decided meanwhile, or the session is not in a
    reviewable state)."""
    lock_run(session_id, fence)
    try:
        review_submit(
            session_id=session_id, user=None, node_id=node_id, decision=decision,
            comment="no decision before the timeout: default applied", timed_out=True,
            call_id=call_id,
        )
    except ServiceError as exc:
        log.info("default decision for %s not applied: %s", node_id, exc.message)
        return False
    return True


def _seconds_left(review: HumanReview) -> int | None:
    if review.deadline is None:
        return None
    return max(1, math.ceil((review.deadline - timezone.now()).total_seconds()))


@idempotent
@transaction.atomic
def review_open(
    *, session_id: Any, fence: int, node_id: str, reviewed_node_id: str, round: int,
    reason: str, timeout: int | None,
) -> None:
    """Ask a human: the session waits (unless it is paused, in which case it stays paused).

    Idempotent per (node, round): a runner taking over re-asks a review that is still
    pending, keeping the original deadline (the ``timeout`` sent is what is left of it), and
    leaves an already decided review untouched."""
    session = lock_run(session_id, fence)
    review, created = HumanReview.objects.get_or_create(
        session=session, node_id=node_id, round=round,
        defaults={
            "reviewed_node_id": reviewed_node_id, "reason": reason,
            "timeout_seconds": timeout,
            "deadline": timezone.now() + timedelta(seconds=timeout) if timeout else None,
        },
    )
    if review.status != ReviewStatus.PENDING:
        return
    node = locked_node(session_id, node_id)
    node.status = NodeStatus.WAITING_REVIEW
    node.rounds = round
    if node.started_at is None:
        node.started_at = timezone.now()
    node.save(update_fields=["status", "rounds", "started_at"])
    if session.status == SessionStatus.RUNNING:
        session.status = SessionStatus.WAITING_REVIEW
        session.save(update_fields=["status", "updated_at"])
    node_state_event(session.pk, node)
    publish_sync(
        session_id=session.pk, event=EventName.HUMAN_INTERACTION_REQUIRED, node_id=node_id,
        data={
            "node_id": node_id, "reason": review.reason,
            "timeout": timeout if created else _seconds_left(review),
            "reviewed_node_id": reviewed_node_id, "round": round,
        },
    )


@idempotent
@transaction.atomic
def tool_approval_open(
    *, session_id: Any, fence: int, node_id: str, round: int, call_id: str, tool: str,
    arguments: str, timeout: int | None,
) -> None:
    """Ask a human whether a tool call may run: the node and the session wait (a paused
    session stays paused). One review row per call, so a retried write asks once."""
    session = lock_run(session_id, fence)
    review, created = HumanReview.objects.get_or_create(
        session=session, node_id=node_id, round=round, call_id=call_id,
        defaults={
            "reason": f"Allow the tool {tool} to run?", "timeout_seconds": timeout,
            "deadline": timezone.now() + timedelta(seconds=timeout) if timeout else None,
        },
    )
    if not created:
        return
    node = locked_node(session_id, node_id)
    node.status = NodeStatus.WAITING_REVIEW
    node.save(update_fields=["status"])
    if session.status == SessionStatus.RUNNING:
        session.status = SessionStatus.WAITING_REVIEW
        session.save(update_fields=["status", "updated_at"])
    node_state_event(session.pk, node)
    publish_sync(
        session_id=session.pk, event=EventName.HUMAN_INTERACTION_REQUIRED, node_id=node_id,
        data={
            "node_id": node_id, "reason": review.reason, "timeout": timeout, "round": round,
            "tool_call_id": call_id, "tool": tool, "arguments": arguments,
        },
    )


@idempotent
@transaction.atomic
def review_auto_approve(
    *, session_id: Any, fence: int, node_id: str, reviewed_node_id: str, round: int,
    reason: str, comment: str,
) -> None:
    """Record the automatic approval once the rejection rounds are spent.

    Nobody is asked (no human_interaction_required): the round is stored as decided by
    nobody, with the note as its comment, and announced with review_submitted."""
    lock_run(session_id, fence)
    _, created = HumanReview.objects.get_or_create(
        session_id=session_id, node_id=node_id, round=round,
        defaults={
            "reviewed_node_id": reviewed_node_id, "reason": reason,
            "status": ReviewStatus.DECIDED, "decision": ReviewDecision.APPROVE,
            "comment": comment, "decided_at": timezone.now(),
        },
    )
    if created:
        _review_event(session_id, node_id=node_id, decision=ReviewDecision.APPROVE,
                      comment=comment, by=None, timed_out=False)


@idempotent
@transaction.atomic
def review_close(*, session_id: Any, fence: int, node_id: str) -> None:
    """The review node approved: it completes."""
    session = lock_run(session_id, fence)
    node = locked_node(session_id, node_id)
    node.status = NodeStatus.COMPLETED
    node.finished_at = timezone.now()
    node.save(update_fields=["status", "finished_at"])
    recount_nodes(session)
    session.save(update_fields=["nodes_completed", "nodes_failed", "updated_at"])
    node_state_event(session_id, node)

