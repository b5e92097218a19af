"""What the workflow runner persists, one transaction per node boundary.

Every function stores the rows and the events describing them together (the events are
broadcast after commit), so viewers, the admin and a runner taking over after a crash all
read the same truth. Nothing here is called per token: partial text is saved at most about
once a second, everything else at node boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    status: str
    fresh: bool
    completed: dict[str, str]  # node_id -> output
    node_status: dict[str, str]
    rounds: dict[str, int]


def run_begin(*, session_id: Any) -> RunStart | None:
    """Enter the run: a fresh start publishes execution:started; a take-over settles what a
    dead runner left half-done (its streaming messages are closed with the exact text the
    viewers saw, from the event log) so the interrupted nodes can run again cleanly."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        if session.status in FINISHED_STATUSES:
            return None
        fresh = session.status == SessionStatus.CREATED
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
            _settle_interrupted(session)
        nodes = list(session.node_states.all())
        return RunStart(
            status=session.status,
            fresh=fresh,
            completed={n.node_id: n.output for n in nodes if n.status == "completed"},
            node_status={n.node_id: n.status for n in nodes},
            rounds={n.node_id: n.rounds for n in nodes},
        )


def _settle_interrupted(session: Session) -> None:
    interrupted = list(
        session.node_states.select_for_update().filter(status__in=["running", "paused"])
    )
    if not interrupted:
        return
    state = fold(read_envelopes(str(session.pk)))
    for node in interrupted:
        streamed = [m for m in state["messages"] if m["node_id"] == node.node_id]
        message = (
            Message.objects.filter(session=session, node_id=node.node_id, is_final=False)
            .order_by("-id")
            .first()
        )
        if message is not None:
            if streamed:
                message.text = streamed[-1]["text"]
                message.thinking = streamed[-1]["thinking"]
            message.is_final = True
            message.save(update_fields=["text", "thinking", "is_final", "updated_at"])
        node.status = "stopped"
        node.finished_at = timezone.now()
        node.save(update_fields=["status", "finished_at"])
        _node_event(session.pk, node, error="interrupted: the runner restarted; running it again")
        node.status = "pending"
        node.error = ""
        node.save(update_fields=["status", "error"])


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
        message = Message.objects.create(
            session_id=session_id, kind=MessageKind.AGENT, node_id=node_id, agent_id=agent_id,
            round=round,
        )
        _node_event(session_id, node)
        return message.pk


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
        node_usage = TokenUsage.objects.filter(session=session, node_id=node_id).aggregate(
            i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd")
        )
        publish_sync(
            session_id=session.pk,
            event="token_usage",
            node_id=node_id,
            data={
                "node_id": node_id,
                "agent_id": agent_id,
                "model": model,
                "input_tokens": node_usage["i"] or 0,
                "output_tokens": node_usage["o"] or 0,
                "estimated_cost_usd": _num(node_usage["c"] or ZERO),
                "final": True,
                "session_input_tokens": session.input_tokens,
                "session_output_tokens": session.output_tokens,
                "session_cost_usd": _num(session.cost_usd),
            },
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
        done = TokenUsage.objects.filter(session=session, node_id=node_id).aggregate(
            i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd")
        )
        publish_sync(
            session_id=session.pk,
            event="token_usage",
            node_id=node_id,
            data={
                "node_id": node_id,
                "agent_id": agent_id,
                "model": model,
                "input_tokens": (done["i"] or 0) + input_tokens,
                "output_tokens": (done["o"] or 0) + output_tokens,
                "estimated_cost_usd": _num((done["c"] or ZERO) + cost_usd),
                "final": False,
                "session_input_tokens": session.input_tokens + input_tokens,
                "session_output_tokens": session.output_tokens + output_tokens,
                "session_cost_usd": _num(session.cost_usd + cost_usd),
            },
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
    with transaction.atomic():
        for node_id in node_ids:
            node = _node(session_id, node_id)
            if node.status != "pending":
                continue
            node.status = "skipped"
            node.error = reason
            node.finished_at = timezone.now()
            node.save(update_fields=["status", "error", "finished_at"])
            _node_event(session_id, node, error=reason)


def review_open(
    *, session_id: Any, node_id: str, reviewed_node_id: str, round: int, reason: str,
    timeout: int | None,
) -> HumanReview:
    """Ask a human: the session waits (unless it is paused, in which case it stays paused)."""
    with transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        review, _ = HumanReview.objects.get_or_create(
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
                "node_id": node_id, "reason": reason, "timeout": timeout,
                "reviewed_node_id": reviewed_node_id, "round": round,
            },
        )
        return review


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
        fields = [
            "run_requested", "lease_owner", "lease_expires_at", "input_tokens", "output_tokens",
            "cost_usd", "nodes_completed", "nodes_failed", "updated_at",
        ]
        if session.status in ACTIVE_STATUSES:
            failed = session.node_states.filter(status__in=["failed", "skipped"]).exists()
            session.finished_at = timezone.now()
            if failed or error:
                session.status = SessionStatus.FAILED
                session.error = error or "a node failed"
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
