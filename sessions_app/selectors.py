"""Reads: for the pages, the room's snapshot and the runner. Writes live in ``services``."""

from __future__ import annotations

import difflib
import re
from datetime import datetime
from decimal import Decimal
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
    TokenUsage,
)
from workflows.store import ReviewState


def sessions_visible_to(*, user: AbstractBaseUser) -> QuerySet[Session]:
    """Sessions the user owns or that were shared with them (staff see all), each with
    ``member_count`` (the owner and every member) and ``role`` (a SessionRole value)."""
    shares = SessionShare.objects.filter(session=OuterRef("pk"))
    counted = shares.values("session").annotate(n=Count("pk")).values("n")
    query = Session.objects.select_related("owner", "parent").annotate(
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


def run_definitions(*, session_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``run_definition`` of many sessions in one query (the runs one claim took)."""
    return {
        str(pk): definition
        for pk, definition in Session.objects.filter(pk__in=session_ids)
        .values_list("pk", "workflow_definition")
    }


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


# ------------------------------------------------------------------------ lineage, compare


def lineage_of(*, session: Session) -> dict[str, Any]:
    """The session's parent (with the node it was forked at) and its forks, newest first."""
    return {
        "parent": session.parent,
        "fork_node_id": session.fork_node_id,
        "fork_changes": session.fork_changes,
        "forks": list(session.forks.select_related("owner").order_by("-created_at")[:50]),
    }


_WORD = re.compile(r"\S+\s*|\s+")


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """``after`` against ``before`` word by word: (op, text) pieces, op one of ``same``,
    ``removed``, ``added``. difflib (the standard library) on word tokens keeping their
    spacing: exact, and readable for prose, where a character diff is noise."""
    a = _WORD.findall(before or "")
    b = _WORD.findall(after or "")
    pieces: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pieces.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            pieces.append(("removed", "".join(a[i1:i2])))
        if j2 > j1:
            pieces.append(("added", "".join(b[j1:j2])))
    return pieces


def _node_figures(session: Session) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for row in TokenUsage.objects.filter(session=session).values(
        "node_id", "input_tokens", "output_tokens", "cost_usd", "inherited", "model"
    ):
        item = figures.setdefault(row["node_id"], {
            "input_tokens": 0, "output_tokens": 0, "cost_usd": Decimal(0), "inherited": True,
            "model": row["model"],
        })
        item["input_tokens"] += row["input_tokens"]
        item["output_tokens"] += row["output_tokens"]
        item["cost_usd"] += row["cost_usd"]
        item["inherited"] = item["inherited"] and row["inherited"]
        item["model"] = row["model"]
    return figures


def compare_sessions(*, left: Session, right: Session) -> dict[str, Any]:
    """Two sessions of one workflow side by side (a fork and its parent), node by node: each
    node's final text with a word diff, tokens and cost; and the totals (each session's own
    cost: what a fork inherited is marked and not counted again)."""
    definition = right.workflow_definition
    titles = {n["id"]: n.get("title") or n["id"] for n in definition.get("nodes", [])}
    for node in left.workflow_definition.get("nodes", []):
        titles.setdefault(node["id"], node.get("title") or node["id"])
    states = {
        side: {n.node_id: n for n in session.node_states.all()}
        for side, session in (("left", left), ("right", right))
    }
    figures = {"left": _node_figures(left), "right": _node_figures(right)}
    rows = []
    for node_id, title in titles.items():
        texts = {side: (states[side].get(node_id).output if states[side].get(node_id) else "")
                 for side in ("left", "right")}
        right_state = states["right"].get(node_id)
        rows.append({
            "node_id": node_id,
            "title": title,
            "left": {"text": texts["left"], "status": _status(states["left"].get(node_id)),
                     **figures["left"].get(node_id, {})},
            "right": {"text": texts["right"], "status": _status(right_state),
                      **figures["right"].get(node_id, {})},
            "inherited": bool(right_state and right_state.inherited),
            "changed": texts["left"] != texts["right"],
            "diff": word_diff(texts["left"], texts["right"]),
        })
    rerun = [r for r in rows if not r["inherited"]]
    return {
        "left": left,
        "right": right,
        "rows": rows,
        "totals": {
            side: {"input_tokens": s.input_tokens, "output_tokens": s.output_tokens,
                   "cost_usd": s.cost_usd}
            for side, s in (("left", left), ("right", right))
        },
        # What the nodes the fork ran again cost in each: what the change bought.
        "rerun": {
            side: sum((r[side].get("cost_usd") or Decimal(0) for r in rerun), Decimal(0))
            for side in ("left", "right")
        },
        "rerun_nodes": [r["node_id"] for r in rerun],
    }


def _status(node: NodeState | None) -> str:
    return node.status if node is not None else ""
