"""Creating and controlling sessions: the writes behind commands, pages, admin and CLI.

Each service is one transaction (``@transaction.atomic``: a caller's own transaction, if any,
becomes a savepoint): the state change and the event describing it are stored together (the
event is broadcast after commit), so a viewer never sees an event whose state was rolled
back, and a failure never leaves half a state behind. Runners are told after commit.
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from realtime.publisher import publish_sync
from realtime.vocabulary import (
    ACTIVE_SESSION_STATUSES,
    BUSY_NODE_STATUSES,
    FINISHED_SESSION_STATUSES,
    EventName,
    NodeStatus,
    SessionStatus,
)
from sessions_app.models import Message, MessageKind, NodeState, Session
from sessions_app.services.errors import InvalidData, InvalidState, NotFound
from sessions_app.services.events import node_state_event
from workflows import control
from workflows.control import RunAction
from workflows.definitions import load_workflow
from workflows.vocabulary import ReviewStatus


@transaction.atomic
def session_create(
    *, owner: AbstractBaseUser, workflow_slug: str, title: str = "",
    budget_usd: Decimal | None = None,
) -> Session:
    """Create a session from a workflow file; the session keeps a copy of the definition.
    Its budget is ``budget_usd`` or else the workflow's (none: no limit). Raises
    DefinitionError for an unknown or broken workflow, InvalidData for a budget <= 0."""
    definition = load_workflow(workflow_slug)
    title = (title or "").strip()[:200] or definition.name
    if budget_usd is None and definition.budget is not None:
        budget_usd = definition.budget.usd
    if budget_usd is not None and not (budget_usd.is_finite() and budget_usd > 0):
        raise InvalidData("a budget must be more than $0")
    session = Session.objects.create(
        owner=owner,
        title=title,
        workflow_slug=definition.slug,
        workflow_definition=definition.to_dict(),
        nodes_total=len(definition.nodes),
        budget_usd=budget_usd,
    )
    NodeState.objects.bulk_create(
        [
            NodeState(
                session=session,
                node_id=node.id,
                node_type=node.type,
                agent_id=node.agent.id if node.agent else "",
            )
            for node in definition.nodes
        ]
    )
    return session


def locked_session(session_id: object) -> Session:
    """The session row, locked until the caller's transaction ends."""
    try:
        return Session.objects.select_for_update().get(pk=session_id)
    except Session.DoesNotExist:
        raise NotFound("no such session") from None


def _has_live_runner(session: Session) -> bool:
    return bool(
        session.lease_owner
        and session.lease_expires_at
        and session.lease_expires_at > timezone.now()
    )


@transaction.atomic
def session_start(*, session_id: object, user: AbstractBaseUser | None) -> Session:
    """Queue the run: a runner claims it and publishes execution:started."""
    session = locked_session(session_id)
    if session.status != SessionStatus.CREATED or session.run_requested:
        raise InvalidState(f"cannot start a session that is {session.status}")
    session.run_requested = True
    session.save(update_fields=["run_requested", "updated_at"])
    transaction.on_commit(control.wake_workers)
    return session


@transaction.atomic
def session_pause(*, session_id: object, user: AbstractBaseUser | None) -> Session:
    session = locked_session(session_id)
    if session.status not in (SessionStatus.RUNNING, SessionStatus.WAITING_REVIEW):
        raise InvalidState(f"cannot pause a session that is {session.status}")
    session.status = SessionStatus.PAUSED
    session.save(update_fields=["status", "updated_at"])
    publish_sync(session_id=session.pk, event=EventName.EXECUTION_PAUSED, data={})
    transaction.on_commit(lambda: control.send_run_control(session.pk, RunAction.PAUSE))
    return session


@transaction.atomic
def session_resume(*, session_id: object, user: AbstractBaseUser | None) -> Session:
    session = locked_session(session_id)
    if session.status != SessionStatus.PAUSED:
        raise InvalidState(f"cannot resume a session that is {session.status}")
    waiting = session.reviews.filter(status=ReviewStatus.PENDING).exists()
    session.status = SessionStatus.WAITING_REVIEW if waiting else SessionStatus.RUNNING
    session.save(update_fields=["status", "updated_at"])
    publish_sync(session_id=session.pk, event=EventName.EXECUTION_RESUMED, data={})
    if not waiting:
        publish_sync(session_id=session.pk, event=EventName.NODE_RESUMED, data={})
    transaction.on_commit(lambda: control.send_run_control(session.pk, RunAction.RESUME))
    return session


@transaction.atomic
def session_stop(*, session_id: object, user: AbstractBaseUser | None) -> Session:
    """Stop now: the runner cancels in-flight provider calls when told."""
    session = locked_session(session_id)
    if session.status not in (*ACTIVE_SESSION_STATUSES, SessionStatus.CREATED):
        raise InvalidState(f"cannot stop a session that is {session.status}")
    now = timezone.now()
    session.status = SessionStatus.STOPPED
    session.run_requested = False
    session.finished_at = now
    session.save(update_fields=["status", "run_requested", "finished_at", "updated_at"])
    session.reviews.filter(status=ReviewStatus.PENDING).update(status=ReviewStatus.CANCELLED)
    if not _has_live_runner(session):
        # No runner to report its nodes: settle them here.
        for node in session.node_states.filter(status__in=BUSY_NODE_STATUSES):
            node.status = NodeStatus.STOPPED
            node.finished_at = now
            node.save(update_fields=["status", "finished_at"])
            node_state_event(session.pk, node)
    by = user.get_username() if user is not None else None
    publish_sync(session_id=session.pk, event=EventName.EXECUTION_STOPPED, data={"by": by})
    transaction.on_commit(lambda: control.send_run_control(session.pk, RunAction.STOP))
    return session


@transaction.atomic
def user_message_post(*, session_id: object, user: AbstractBaseUser, text: str) -> Message:
    """A participant speaks to the meeting; agents that start later see it."""
    text = text.strip()
    if not text:
        raise InvalidData("empty message")
    session = locked_session(session_id)
    if session.status in FINISHED_SESSION_STATUSES:
        raise InvalidState(f"the session is {session.status}")
    message = Message.objects.create(
        session=session, kind=MessageKind.USER, user=user, text=text, is_final=True
    )
    publish_sync(
        session_id=session.pk,
        event=EventName.USER_MESSAGE,
        data={"text": text, "user": user.get_username(), "message_id": str(message.pk)},
    )
    return message
