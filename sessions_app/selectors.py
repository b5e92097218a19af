"""Reads: for the pages, the room's snapshot and the runner. Writes live in ``services``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import (
    Case,
    Count,
    Exists,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from realtime.timestamps import iso_ms_or_none
from realtime.vocabulary import NodeStatus, NodeType, ReviewDecision
from sessions_app.models import (
    HumanReview,
    Message,
    MessageKind,
    NodeState,
    Session,
    SessionRole,
    SessionShare,
    ShareLink,
    ShareLinkJoin,
)
from workflows.store import ReviewState


def sessions_visible_to(*, user: AbstractBaseUser) -> QuerySet[Session]:
    """Sessions the user owns or that were shared with them (staff see all), each with
    ``member_count`` (the owner and every member) and ``role`` (a SessionRole value)."""
    shares = SessionShare.objects.filter(session=OuterRef("pk"))
    counted = shares.values("session").annotate(n=Count("pk")).values("n")
    query = Session.objects.select_related("owner").annotate(
        member_count=Coalesce(Subquery(counted), 0) + 1,
        role=Case(
            When(owner=user, then=Value(SessionRole.OWNER)),
            When(Exists(shares.filter(user=user, can_control=True)),
                 then=Value(SessionRole.CONTROLLER)),
            When(Exists(shares.filter(user=user)), then=Value(SessionRole.VIEWER)),
            default=Value(SessionRole.STAFF),
        ),
    )
    if not user.is_staff:
        query = query.filter(Q(owner=user) | Q(shares__user=user)).distinct()
    return query.order_by("-created_at")


# ------------------------------------------------------------------------ members


def members_of(*, session_id: Any) -> dict[str, str]:
    """username -> role of everyone who belongs to the session, the owner first."""
    session = Session.objects.select_related("owner").get(pk=session_id)
    members = {session.owner.get_username(): SessionRole.OWNER.value}
    for username, can_control in (
        SessionShare.objects.filter(session_id=session_id)
        .order_by("user__username").values_list("user__username", "can_control")
    ):
        members[username] = (SessionRole.CONTROLLER if can_control else SessionRole.VIEWER).value
    return members


SEARCH_LIMIT = 10


def users_to_add(*, session: Session, query: str) -> list[dict[str, str]]:
    """Active users whose username or name starts with ``query`` (at least 2 characters)
    and who do not belong to the session yet. Callers check the asker may manage members."""
    query = query.strip()
    if len(query) < 2:
        return []
    user_model = get_user_model()
    found = (
        user_model.objects.filter(is_active=True)
        .filter(Q(username__istartswith=query) | Q(first_name__istartswith=query)
                | Q(last_name__istartswith=query))
        .exclude(pk=session.owner_id)
        .exclude(shared_sessions__session=session)
        .order_by("username")[:SEARCH_LIMIT]
    )
    return [{"username": u.get_username(), "name": u.get_full_name()} for u in found]


def share_links_of(*, session: Session) -> list[ShareLink]:
    """The session's links, newest first, each with ``joins`` (and their users) prefetched."""
    return list(
        ShareLink.objects.filter(session=session).select_related("created_by")
        .prefetch_related(Prefetch("joins", ShareLinkJoin.objects.select_related("user")))
        .order_by("-created_at")
    )


# ------------------------------------------------------------------------ the room


def room_header(*, session_id: Any) -> dict[str, Any]:
    """The snapshot's ``session`` and ``workflow`` objects (docs/protocol.md)."""
    session = Session.objects.select_related("owner").get(pk=session_id)
    return {"session": session_view(session), "workflow": workflow_view(session.workflow_definition)}


def session_view(session: Session) -> dict[str, Any]:
    return {
        "id": str(session.pk),
        "title": session.title,
        "workflow": session.workflow_slug,
        "status": session.status,
        "owner": session.owner.get_username(),
        "created_at": iso_ms_or_none(session.created_at),
        "started_at": iso_ms_or_none(session.started_at),
        "finished_at": iso_ms_or_none(session.finished_at),
    }


def workflow_view(definition: dict[str, Any]) -> dict[str, Any]:
    """The graph the room draws, from the definition copy the session runs."""
    agents = definition.get("agents", {})
    nodes = []
    for node in definition.get("nodes", []):
        agent_ref = node.get("agent")
        agent = agents.get(agent_ref) if isinstance(agent_ref, str) else agent_ref
        nodes.append(
            {
                "id": node["id"],
                "type": node.get("type", NodeType.AGENT),
                "title": node.get("title") or node["id"],
                "depends_on": list(node.get("depends_on", [])),
                "agent": (
                    {
                        "id": agent.get("id", agent_ref),
                        "name": agent.get("name", ""),
                        "role": agent.get("role", ""),
                        "model": agent.get("model", ""),
                        # A remote AG-UI agent (provider agui): the room shows a badge.
                        "remote": bool(agent.get("agui")),
                    }
                    if agent
                    else None
                ),
            }
        )
    return {"slug": definition.get("slug", ""), "name": definition.get("name", ""), "nodes": nodes}


# ------------------------------------------------------------------------ the runner


def run_definition(*, session_id: Any) -> dict[str, Any]:
    """The copy of the workflow definition the session runs."""
    return Session.objects.filter(pk=session_id).values_list("workflow_definition", flat=True).get()


def user_messages_before(*, session_id: Any, before_id: int | None = None) -> list[dict[str, str]]:
    """Users' messages an agent starting now may read."""
    query = Message.objects.filter(session_id=session_id, kind=MessageKind.USER)
    if before_id is not None:
        query = query.filter(pk__lt=before_id)
    return [
        {"user": user or "user", "text": text}
        for user, text in query.order_by("id").values_list("user__username", "text")
    ]


def review_state(
    *, session_id: Any, node_id: str, round: int, call_id: str = ""
) -> ReviewState | None:
    review = HumanReview.objects.filter(
        session_id=session_id, node_id=node_id, round=round, call_id=call_id
    ).first()
    if review is None:
        return None
    return ReviewState(
        status=review.status, decision=review.decision, comment=review.comment,
        decided_at=review.decided_at, deadline=review.deadline,
    )


def review_comments(*, session_id: Any, node_id: str) -> list[str]:
    """Non-empty comments of a review node's approved rounds, for the nodes after it."""
    return [
        comment
        for comment in HumanReview.objects.filter(
            session_id=session_id, node_id=node_id, decision=ReviewDecision.APPROVE
        ).order_by("round").values_list("comment", flat=True)
        if comment
    ]


def answered_after(*, session_id: Any, node_id: str, moment: datetime) -> bool:
    """Did the node complete an answer after ``moment`` (a review decision)? Lets a runner
    that takes over tell whether the retry a rejection asked for already happened."""
    return NodeState.objects.filter(
        session_id=session_id, node_id=node_id, status=NodeStatus.COMPLETED, finished_at__gt=moment
    ).exists()


def transcript_search(*, session_id: Any, query: str, limit: int = 5) -> list[dict[str, str]]:
    """Messages of the session containing every word of ``query`` (case-insensitive), most
    recent first, each as who said it and an excerpt around the first word found."""
    words = [word for word in query.lower().split() if word][:10]
    if not words:
        return []
    messages = Message.objects.filter(session_id=session_id)
    for word in words:
        messages = messages.filter(text__icontains=word)
    hits = []
    for node_id, username, text in messages.order_by("-id").values_list(
        "node_id", "user__username", "text"
    )[: max(1, min(limit, 20))]:
        at = text.lower().find(words[0])
        start = max(0, at - 60)
        excerpt = ("..." if start else "") + text[start:start + 200].strip()
        hits.append({"who": node_id or username or "user", "excerpt": " ".join(excerpt.split())})
    return hits
