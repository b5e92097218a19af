"""Plain ORM helpers that build sessions as a finished or running run would leave them.

They write rows directly (no services, no engine) so admin tests and the screenshot script
can set up exact numbers — costs, timestamps, event counts — and assert on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from realtime.models import SessionEvent, SessionLog
from sessions_app.models import (
    HumanReview,
    Message,
    MessageKind,
    NodeState,
    NodeStatus,
    ReviewStatus,
    Session,
    SessionStatus,
    TokenUsage,
)

DEFAULT_MODEL = "gpt-4o-mini"


def make_user(username: str = "owner", **extra: Any) -> AbstractBaseUser:
    """A user with a known password ("pw-123456") so tests and scripts can log in."""
    user_model = get_user_model()
    user = user_model.objects.create_user(username=username, password="pw-123456", **extra)
    return user


@dataclass(frozen=True)
class NodeSpec:
    """One node of a fabricated run, with the usage it is charged."""

    node_id: str
    agent_id: str
    status: str = NodeStatus.COMPLETED
    input_tokens: int = 100
    output_tokens: int = 50
    cost_usd: Decimal = Decimal("0.010000")
    answer: str = ""
    thinking: str = ""


def _set_created_at(session: Session, created_at: datetime) -> None:
    # created_at is auto_now_add: only an update can put a session on another day.
    Session.objects.filter(pk=session.pk).update(created_at=created_at)
    session.created_at = created_at


def make_session(
    *,
    owner: AbstractBaseUser,
    title: str = "Quarterly planning",
    workflow_slug: str = "demo",
    status: str = SessionStatus.COMPLETED,
    nodes: list[NodeSpec] | None = None,
    created_at: datetime | None = None,
    duration: timedelta | None = timedelta(minutes=3, seconds=20),
    events: int = 0,
    review: bool = False,
    reviewer: AbstractBaseUser | None = None,
) -> Session:
    """A session with node states, usage, transcript, optional review and event log.

    Session totals are the sums of the node usage, as the engine keeps them.
    """
    nodes = nodes if nodes is not None else default_nodes()
    created = created_at or timezone.now()
    started = created + timedelta(seconds=5) if status != SessionStatus.CREATED else None
    finished = None
    if started is not None and duration is not None and status not in _ACTIVE:
        finished = started + duration
    charged = [n for n in nodes if n.status != NodeStatus.PENDING]
    session = Session.objects.create(
        owner=owner,
        title=title,
        workflow_slug=workflow_slug,
        workflow_definition={"slug": workflow_slug, "nodes": [n.node_id for n in nodes]},
        status=status,
        started_at=started,
        finished_at=finished,
        nodes_total=len(nodes),
        nodes_completed=sum(n.status == NodeStatus.COMPLETED for n in nodes),
        nodes_failed=sum(n.status == NodeStatus.FAILED for n in nodes),
        input_tokens=sum(n.input_tokens for n in charged),
        output_tokens=sum(n.output_tokens for n in charged),
        cost_usd=sum((n.cost_usd for n in charged), Decimal("0")),
        error="provider timeout" if status == SessionStatus.FAILED else "",
    )
    _set_created_at(session, created)
    _add_nodes(session, nodes, started)
    if review:
        _add_review(session, nodes, reviewer or owner)
    if events:
        add_events(session, events)
    return session


_ACTIVE = (SessionStatus.RUNNING, SessionStatus.PAUSED, SessionStatus.WAITING_REVIEW)


def default_nodes() -> list[NodeSpec]:
    return [
        NodeSpec(
            "research", "analyst", input_tokens=1200, output_tokens=400,
            cost_usd=Decimal("0.004200"),
            answer="Market grew 12% year over year; two competitors launched.",
            thinking="Compare last year's figures first, then list the launches.",
        ),
        NodeSpec(
            "draft", "writer", input_tokens=1800, output_tokens=900,
            cost_usd=Decimal("0.007500"),
            answer="Draft: focus Q3 on retention; pause the EU expansion.",
            thinking="The analyst's numbers favour retention over expansion.",
        ),
    ]


def _add_nodes(session: Session, nodes: list[NodeSpec], started: datetime | None) -> None:
    at = started or session.created_at
    for index, spec in enumerate(nodes):
        node_start = at + timedelta(seconds=20 * index)
        charged = spec.status != NodeStatus.PENDING
        NodeState.objects.create(
            session=session, node_id=spec.node_id, agent_id=spec.agent_id, status=spec.status,
            started_at=node_start if charged else None,
            finished_at=node_start + timedelta(seconds=15) if charged else None,
            rounds=1 if charged else 0, output=spec.answer,
            error="model refused" if spec.status == NodeStatus.FAILED else "",
        )
        if not charged:
            continue
        TokenUsage.objects.create(
            session=session, node_id=spec.node_id, agent_id=spec.agent_id, model=DEFAULT_MODEL,
            input_tokens=spec.input_tokens, output_tokens=spec.output_tokens,
            cost_usd=spec.cost_usd,
        )
        if spec.answer or spec.thinking:
            Message.objects.create(
                session=session, kind=MessageKind.AGENT, node_id=spec.node_id,
                agent_id=spec.agent_id, text=spec.answer, thinking=spec.thinking, is_final=True,
            )


def _add_review(session: Session, nodes: list[NodeSpec], reviewer: AbstractBaseUser) -> None:
    reviewed = nodes[-1].node_id if nodes else ""
    HumanReview.objects.create(
        session=session, node_id="review", reviewed_node_id=reviewed,
        reason="Check the draft before it goes out.", status=ReviewStatus.DECIDED,
        decision="approve", comment="Looks good.", decided_by=reviewer,
        decided_at=timezone.now(),
    )


def add_user_message(session: Session, user: AbstractBaseUser, text: str) -> Message:
    return Message.objects.create(
        session=session, kind=MessageKind.USER, user=user, text=text, is_final=True
    )


def add_events(session: Session, count: int, event: str = "token_stream") -> None:
    """Append `count` events after the session's last seq, as the event log would."""
    log = SessionLog.objects.get(pk=session.pk)
    first = log.last_seq + 1
    now = timezone.now()
    SessionEvent.objects.bulk_create(
        [
            SessionEvent(
                session=log, seq=seq, event=event, node_id="research",
                data={"chunk": f"chunk {seq}", "agent_id": "analyst", "node_id": "research",
                      "is_thinking": False},
                created_at=now,
            )
            for seq in range(first, first + count)
        ],
        batch_size=1000,
    )
    log.last_seq = first + count - 1
    log.save(update_fields=["last_seq"])


def make_many_sessions(
    *, owners: list[AbstractBaseUser], count: int, workflows: tuple[str, ...] = ("demo",)
) -> list[Session]:
    """Many bare sessions in one insert, for list-page query bounds."""
    now = timezone.now()
    statuses = list(SessionStatus.values)
    rows = [
        Session(
            owner=owners[i % len(owners)],
            title=f"Session {i}",
            workflow_slug=workflows[i % len(workflows)],
            status=statuses[i % len(statuses)],
            started_at=now - timedelta(minutes=i + 1),
            finished_at=now - timedelta(minutes=i),
            input_tokens=100 * i,
            output_tokens=10 * i,
            cost_usd=Decimal(i) / Decimal(1000),
            nodes_total=3,
            nodes_completed=i % 4,
            nodes_failed=i % 2,
        )
        for i in range(count)
    ]
    return Session.objects.bulk_create(rows, batch_size=500)
