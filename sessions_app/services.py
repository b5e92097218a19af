"""Business actions on sessions, shared by the WebSocket commands, views, admin and CLI.

Each action is one transaction: the state change and the event describing it are stored
together (the event is broadcast after commit), so a viewer never sees an event whose state
was rolled back, and a failure never leaves half a state behind.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from realtime import groups
from realtime.publisher import publish_sync
from sessions_app.models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    CommandReceipt,
    HumanReview,
    Message,
    MessageKind,
    NodeState,
    ReviewStatus,
    Session,
    SessionShare,
    SessionStatus,
)

log = logging.getLogger(__name__)


class ServiceError(Exception):
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidState(ServiceError):
    code = "invalid_state"


class NotFound(ServiceError):
    code = "not_found"


class Forbidden(ServiceError):
    code = "forbidden"


class InvalidData(ServiceError):
    code = "invalid_data"


# ------------------------------------------------------------------------ access

WATCH = "watch"
CONTROL = "control"


def session_access(*, user: AbstractBaseUser, session: Session) -> str | None:
    """Who may do what: the owner controls; staff control with the admin's change permission
    and watch with view permission (the same rule as the admin); a share grants watch or control."""
    if not user.is_authenticated or not user.is_active:
        return None
    if session.owner_id == user.pk:
        return CONTROL
    if user.is_staff and user.has_perm("sessions_app.change_session"):
        return CONTROL
    share = SessionShare.objects.filter(session=session, user=user).first()
    if share is not None:
        return CONTROL if share.can_control else WATCH
    if user.is_staff and user.has_perm("sessions_app.view_session"):
        return WATCH
    return None


# ------------------------------------------------------------------------ create / share


def session_create(*, owner: AbstractBaseUser, workflow_slug: str, title: str = "") -> Session:
    """Create a session from a workflow file; the session keeps a copy of the definition."""
    from workflows.definitions import load_workflow

    definition = load_workflow(workflow_slug)
    title = (title or "").strip()[:200] or definition.name
    with transaction.atomic():
        session = Session.objects.create(
            owner=owner,
            title=title,
            workflow_slug=definition.slug,
            workflow_definition=definition.to_dict(),
            nodes_total=len(definition.nodes),
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


def session_share(
    *, session: Session, user: AbstractBaseUser, can_control: bool = False
) -> SessionShare:
    share, _ = SessionShare.objects.update_or_create(
        session=session, user=user, defaults={"can_control": can_control}
    )
    return share


# ------------------------------------------------------------------------ run control


def send_run_control(session_id: str, action: str, **extra: Any) -> None:
    """Tell whichever process runs the session (embedded or worker) to act now."""
    message = {"type": groups.RUN_CONTROL, "sid": str(session_id), "action": action, **extra}
    try:
        async_to_sync(get_channel_layer().group_send)(groups.run_control_group(session_id), message)
    except Exception:  # the runner also re-reads the session at every lease renewal
        log.exception("run control %s for %s not delivered", action, session_id)


def wake_workers() -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(
            groups.WORKERS_GROUP, {"type": groups.WORKER_WAKE}
        )
    except Exception:
        log.exception("worker wake-up not delivered; workers poll anyway")


def _locked(session_id: str) -> Session:
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


def session_start(*, session_id: str, user: AbstractBaseUser | None) -> Session:
    """Queue the run: a runner claims it and publishes execution:started."""
    session = _locked(session_id)
    if session.status != SessionStatus.CREATED or session.run_requested:
        raise InvalidState(f"cannot start a session that is {session.status}")
    session.run_requested = True
    session.save(update_fields=["run_requested", "updated_at"])
    transaction.on_commit(wake_workers)
    return session


def session_pause(*, session_id: str, user: AbstractBaseUser | None) -> Session:
    session = _locked(session_id)
    if session.status not in (SessionStatus.RUNNING, SessionStatus.WAITING_REVIEW):
        raise InvalidState(f"cannot pause a session that is {session.status}")
    session.status = SessionStatus.PAUSED
    session.save(update_fields=["status", "updated_at"])
    publish_sync(session_id=session.pk, event="execution:paused", data={})
    transaction.on_commit(lambda: send_run_control(session.pk, "pause"))
    return session


def session_resume(*, session_id: str, user: AbstractBaseUser | None) -> Session:
    session = _locked(session_id)
    if session.status != SessionStatus.PAUSED:
        raise InvalidState(f"cannot resume a session that is {session.status}")
    waiting = session.reviews.filter(status=ReviewStatus.PENDING).exists()
    session.status = SessionStatus.WAITING_REVIEW if waiting else SessionStatus.RUNNING
    session.save(update_fields=["status", "updated_at"])
    publish_sync(session_id=session.pk, event="execution:resumed", data={})
    if not waiting:
        publish_sync(session_id=session.pk, event="node_resumed", data={})
    transaction.on_commit(lambda: send_run_control(session.pk, "resume"))
    return session


def session_stop(*, session_id: str, user: AbstractBaseUser | None) -> Session:
    """Stop now: the runner cancels in-flight provider calls when told."""
    session = _locked(session_id)
    if session.status not in (*ACTIVE_STATUSES, SessionStatus.CREATED):
        raise InvalidState(f"cannot stop a session that is {session.status}")
    now = timezone.now()
    session.status = SessionStatus.STOPPED
    session.run_requested = False
    session.finished_at = now
    session.save(update_fields=["status", "run_requested", "finished_at", "updated_at"])
    session.reviews.filter(status=ReviewStatus.PENDING).update(status=ReviewStatus.CANCELLED)
    if not _has_live_runner(session):
        # No runner to report its nodes: settle them here.
        for node in session.node_states.filter(status__in=["running", "paused", "waiting_review"]):
            node.status = "stopped"
            node.finished_at = now
            node.save(update_fields=["status", "finished_at"])
            publish_sync(
                session_id=session.pk, event="node_state_change", node_id=node.node_id,
                data={"node_id": node.node_id, "status": "stopped", "agent_id": node.agent_id or None},
            )
    by = user.get_username() if user is not None else None
    publish_sync(session_id=session.pk, event="execution:stopped", data={"by": by})
    transaction.on_commit(lambda: send_run_control(session.pk, "stop"))
    return session


def user_message_post(*, session_id: str, user: AbstractBaseUser, text: str) -> Message:
    """A participant speaks to the meeting; agents that start later see it."""
    text = text.strip()
    if not text:
        raise InvalidData("empty message")
    session = _locked(session_id)
    if session.status in FINISHED_STATUSES:
        raise InvalidState(f"the session is {session.status}")
    message = Message.objects.create(
        session=session, kind=MessageKind.USER, user=user, text=text, is_final=True
    )
    publish_sync(
        session_id=session.pk,
        event="user_message",
        data={"text": text, "user": user.get_username(), "message_id": str(message.pk)},
    )
    return message


def review_submit(
    *,
    session_id: str,
    user: AbstractBaseUser | None,
    node_id: str,
    decision: str,
    comment: str = "",
    timed_out: bool = False,
) -> HumanReview:
    """Decide the pending review of a node; the runner continues or sends it back."""
    if decision not in ("approve", "reject"):
        raise InvalidData("decision must be approve or reject")
    comment = (comment or "").strip()
    if decision == "reject" and not comment and not timed_out:
        raise InvalidData("a rejection needs a comment for the agent")
    session = _locked(session_id)
    review = (
        HumanReview.objects.select_for_update()
        .filter(session=session, node_id=node_id, status=ReviewStatus.PENDING)
        .order_by("-round")
        .first()
    )
    if review is None:
        if not session.node_states.filter(node_id=node_id).exists():
            raise NotFound(f"no node {node_id!r} in this session")
        raise InvalidState(f"node {node_id!r} is not waiting for a review")
    if session.status not in (
        SessionStatus.WAITING_REVIEW, SessionStatus.PAUSED, SessionStatus.RUNNING
    ):
        raise InvalidState(f"cannot review while the session is {session.status}")
    now = timezone.now()
    review.status = ReviewStatus.TIMED_OUT if timed_out else ReviewStatus.DECIDED
    review.decision = decision
    review.comment = comment
    review.decided_by = user
    review.decided_at = now
    review.save()
    publish_sync(
        session_id=session.pk,
        event="review_submitted",
        node_id=node_id,
        data={
            "node_id": node_id,
            "decision": decision,
            "comment": comment,
            "by": user.get_username() if user is not None else None,
            "timed_out": timed_out,
        },
    )
    others_pending = session.reviews.filter(status=ReviewStatus.PENDING).exists()
    if session.status == SessionStatus.WAITING_REVIEW and not others_pending:
        session.status = SessionStatus.RUNNING
        session.save(update_fields=["status", "updated_at"])
        publish_sync(session_id=session.pk, event="node_resumed", node_id=node_id,
                     data={"node_id": node_id})
    transaction.on_commit(lambda: send_run_control(session.pk, "review", node_id=node_id))
    return review


# ------------------------------------------------------------------------ commands

_COMMAND_SERVICES = {
    "start_session": lambda sid, user, data: session_start(session_id=sid, user=user),
    "pause_session": lambda sid, user, data: session_pause(session_id=sid, user=user),
    "resume_session": lambda sid, user, data: session_resume(session_id=sid, user=user),
    "stop_session": lambda sid, user, data: session_stop(session_id=sid, user=user),
    "user_input": lambda sid, user, data: user_message_post(
        session_id=sid, user=user, text=data["text"]
    ),
    "submit_review": lambda sid, user, data: review_submit(
        session_id=sid, user=user, node_id=data["node_id"], decision=data["decision"],
        comment=data.get("comment", ""),
    ),
}

CONTROL_COMMANDS = frozenset(_COMMAND_SERVICES)


def command_execute(
    *, session_id: str, user: AbstractBaseUser, cmd: str, data: dict[str, Any], command_id: str | None
) -> bool:
    """Run a client command once; returns True when the id was already executed (not re-run).

    The receipt is written in the command's own transaction, so a rejected command leaves
    neither its effect nor its receipt behind and may be retried with the same id.
    """
    service = _COMMAND_SERVICES[cmd]
    try:
        with transaction.atomic():
            if command_id is not None:
                CommandReceipt.objects.create(
                    session_id=session_id, command_id=command_id, cmd=cmd, user=user
                )
            service(session_id, user, data)
    except IntegrityError:
        if command_id is not None and CommandReceipt.objects.filter(
            session_id=session_id, command_id=command_id
        ).exists():
            return True
        raise
    return False


def review_deadline(seconds: int | None) -> Any:
    return timezone.now() + timedelta(seconds=seconds) if seconds else None
