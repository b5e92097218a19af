"""A session's budget: the warning, the request when it is reached, and its answer.

A budget request is a human review (``HumanReview`` with no node, keyed by
``workflows.budget.BUDGET_REVIEW_KEY`` as a tool call's approval is keyed by its call id):
it is asked with ``human_interaction_required`` (carrying ``budget_usd`` and ``cost_usd``),
answered with ``submit_review`` (approve with a higher ``budget_usd``: the run goes on;
reject: the session stops), and at its timeout the workflow's ``budget.default_decision``
applies (approve then raises the budget by the workflow's ``budget.usd``). Each state change
is logged as ``budget_status`` so every viewer sees where the spend stands.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from realtime.publisher import publish_sync
from realtime.vocabulary import BudgetState, EventName, ReviewDecision, SessionStatus
from sessions_app.models import HumanReview, Session
from sessions_app.services.errors import InvalidData
from sessions_app.services.leases import lock_run
from sessions_app.services.receipts import idempotent
from sessions_app.services.sessions import session_stop
from workflows.budget import BUDGET_REVIEW_KEY
from workflows.vocabulary import ReviewStatus


def _money(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def budget_event(session: Session, *, cost_usd: Decimal | None = None) -> None:
    """``budget_status``: the budget, the state and the cost then (live, from the engine)."""
    cost = session.cost_usd if cost_usd is None else cost_usd
    publish_sync(
        session_id=session.pk, event=EventName.BUDGET_STATUS,
        data={"budget_usd": _money(session.budget_usd), "cost_usd": float(cost),
              "state": str(session.budget_state)},
    )


@idempotent
@transaction.atomic
def budget_notice(*, session_id: Any, fence: int, state: str, cost_usd: Decimal) -> None:
    """The live cost crossed the warning threshold: viewers see it (logged once per state)."""
    session = lock_run(session_id, fence)
    if session.budget_state == state or session.budget_usd is None:
        return
    session.budget_state = state
    session.save(update_fields=["budget_state", "updated_at"])
    budget_event(session, cost_usd=cost_usd)


@idempotent
@transaction.atomic
def budget_review_open(*, session_id: Any, fence: int, cost_usd: Decimal) -> int:
    """The budget is reached: the session waits for a controller (a paused one stays
    paused). A request still pending (a take-over asks again) is kept, not asked twice.
    Returns its round."""
    session = lock_run(session_id, fence)
    requests = HumanReview.objects.filter(session=session, node_id="", call_id=BUDGET_REVIEW_KEY)
    pending = requests.filter(status=ReviewStatus.PENDING).order_by("-round").first()
    if pending is not None:
        return pending.round
    timeout = (session.workflow_definition.get("budget") or {}).get("timeout")
    review = HumanReview.objects.create(
        session=session, node_id="", call_id=BUDGET_REVIEW_KEY, round=requests.count() + 1,
        reason=(f"Budget reached: ${cost_usd:.4f} of ${session.budget_usd:.4f} spent. "
                "Raise the budget to go on, or stop the run."),
        timeout_seconds=timeout,
        deadline=timezone.now() + timedelta(seconds=timeout) if timeout else None,
    )
    session.budget_state = BudgetState.REACHED
    if session.status == SessionStatus.RUNNING:
        session.status = SessionStatus.WAITING_REVIEW
    session.save(update_fields=["budget_state", "status", "updated_at"])
    budget_event(session, cost_usd=cost_usd)
    publish_sync(
        session_id=session.pk, event=EventName.HUMAN_INTERACTION_REQUIRED, node_id=None,
        data={"node_id": "", "reason": review.reason, "timeout": timeout, "round": review.round,
              "budget_usd": float(session.budget_usd or 0), "cost_usd": float(cost_usd)},
    )
    return review.round


def budget_decided(
    *, session: Session, review: HumanReview, user: AbstractBaseUser | None,
    budget_usd: Decimal | None, timed_out: bool,
) -> None:
    """Carry out a budget request's decision (inside ``review_submit``'s transaction):
    approve raises the budget, reject stops the session."""
    if review.decision == ReviewDecision.REJECT:
        session_stop(session_id=session.pk, user=user)
        return
    current = session.budget_usd or Decimal(0)
    if budget_usd is None and timed_out:
        step = Decimal(str((session.workflow_definition.get("budget") or {}).get("usd") or current))
        budget_usd = current + step
    validate_raise(current=current, new=budget_usd)
    session.budget_usd = budget_usd
    session.budget_state = BudgetState.OK
    session.save(update_fields=["budget_usd", "budget_state", "updated_at"])
    budget_event(session)


def validate_raise(*, current: Decimal, new: Decimal | None) -> None:
    if new is None:
        raise InvalidData("to go on, give the new budget (budget_usd)")
    if not new.is_finite() or new <= 0:
        raise InvalidData("a budget must be more than $0")
    if new <= current:
        raise InvalidData(f"the new budget must be more than the current ${current:.4f}")
