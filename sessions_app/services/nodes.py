"""The life of an agent node, one transaction per boundary: begin, pause/resume, complete,
fail, stop, skip.

Nothing here is called per token: partial text is saved at most about once a second,
everything else at node boundaries. Each write stores the rows and the events describing
them together (broadcast after commit).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from realtime.publisher import publish_sync
from realtime.vocabulary import FINAL_NODE_STATUSES, EventName, NodeStatus
from sessions_app.models import HumanReview, Message, MessageKind, NodeState, Session, TokenUsage
from sessions_app.services import observed
from sessions_app.services.events import node_state_event
from sessions_app.services.leases import lock_run
from sessions_app.services.receipts import idempotent
from sessions_app.services.usage import apply_session_totals, publish_usage
from workflows.vocabulary import ReviewStatus

MAX_ERROR = 2000


def locked_node(session_id: Any, node_id: str) -> NodeState:
    return NodeState.objects.select_for_update().get(session_id=session_id, node_id=node_id)


def recount_nodes(session: Session) -> int:
    """The session's completed/failed counters from the node rows (saved by the caller), in
    one query; returns how many nodes the session has."""
    counts = session.node_states.aggregate(
        total=Count("pk"),
        completed=Count("pk", filter=Q(status=NodeStatus.COMPLETED)),
        failed=Count("pk", filter=Q(status=NodeStatus.FAILED)),
    )
    session.nodes_completed = counts["completed"]
    session.nodes_failed = counts["failed"]
    return counts["total"]


def close_message(message_id: int | None, *, text: str, thinking: str) -> None:
    """Final text of a node's message: exactly what the log holds (what viewers were sent)."""
    if message_id is not None:
        Message.objects.filter(pk=message_id).update(
            text=text, thinking=thinking, is_final=True, updated_at=timezone.now()
        )


@idempotent
@transaction.atomic
def node_begin(*, session_id: Any, fence: int, node_id: str, agent_id: str, round: int) -> int:
    """Node starts streaming: its status and a new transcript message; returns the message id."""
    lock_run(session_id, fence)
    node = locked_node(session_id, node_id)
    node.status = NodeStatus.RUNNING
    node.error = ""
    node.rounds = round
    if node.started_at is None:
        node.started_at = timezone.now()
    node.finished_at = None
    node.inherited = False  # a fork's inherited node a rejection sends back runs here now
    node.save(update_fields=["status", "error", "rounds", "started_at", "finished_at", "inherited"])
    message = _open_message(session_id, node_id, round) or Message.objects.create(
        session_id=session_id, kind=MessageKind.AGENT, node_id=node_id, agent_id=agent_id,
        round=round,
    )
    node_state_event(session_id, node)
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


@idempotent
@transaction.atomic
def node_set_status(*, session_id: Any, fence: int, node_id: str, status: str) -> None:
    """Pause/resume of one node at a chunk boundary."""
    lock_run(session_id, fence)
    node = locked_node(session_id, node_id)
    node.status = status
    node.save(update_fields=["status"])
    node_state_event(session_id, node)


@transaction.atomic
def message_save_partial(
    *, session_id: Any, fence: int, message_id: int, text: str, thinking: str
) -> None:
    """Checkpoint of a streaming message for the admin (one UPDATE, about once a second)."""
    lock_run(session_id, fence)
    Message.objects.filter(pk=message_id, is_final=False).update(
        text=text, thinking=thinking, updated_at=timezone.now()
    )


@transaction.atomic
def messages_save_partial(*, saves: list[dict[str, Any]]) -> int:
    """Checkpoints of many streaming messages (every agent of one executor) in one
    transaction: each ``{"session_id", "fence", "message_id", "text", "thinking"}`` is
    written if its runner still holds the lease (rows locked in id order, as ``lock_run``
    would one by one) and the message is still open. Returns how many were written.

    One executor streams hundreds of agents; one UPDATE each per second was most of the
    database's work in the agents-per-core benchmark (docs/PERFORMANCE.md)."""
    if not saves:
        return 0
    if connection.vendor == "postgresql":
        return _messages_save_partial_postgres(saves)
    fences = {str(save["session_id"]): save["fence"] for save in saves}
    current = dict(
        Session.objects.select_for_update().filter(pk__in=list(fences)).order_by("pk")
        .values_list("pk", "lease_generation")
    )
    held = {str(pk) for pk, generation in current.items() if fences.get(str(pk)) == generation}
    wanted = {save["message_id"]: save for save in saves if str(save["session_id"]) in held}
    now = timezone.now()
    open_messages = list(Message.objects.filter(pk__in=list(wanted), is_final=False).only("pk"))
    for message in open_messages:
        message.text = wanted[message.pk]["text"]
        message.thinking = wanted[message.pk]["thinking"]
        message.updated_at = now
    Message.objects.bulk_update(open_messages, ["text", "thinking", "updated_at"], batch_size=200)
    return len(open_messages)


def _messages_save_partial_postgres(saves: list[dict[str, Any]]) -> int:
    """The same as one statement: the ORM's ``bulk_update`` (a CASE per column and row)
    held the GIL for 5 % of a worker streaming 250 agents, in the thread every run write
    waits for (``bench/run.py --only agents --profile-gil``, docs/PERFORMANCE.md).
    Array parameters keep the query text the same for every batch."""
    qn = connection.ops.quote_name
    sessions, messages = qn(Session._meta.db_table), qn(Message._meta.db_table)
    params = [
        [uuid.UUID(str(save["session_id"])) for save in saves],
        [save["fence"] for save in saves],
        [save["message_id"] for save in saves],
        [save["text"] for save in saves],
        [save["thinking"] for save in saves],
        timezone.now(),
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH v(session_id, fence, message_id, text, thinking) AS (SELECT * FROM "
            "unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::text[], %s::text[])), "
            f"held AS (SELECT s.id FROM {sessions} s JOIN v ON s.id = v.session_id "
            "AND s.lease_generation = v.fence ORDER BY s.id FOR UPDATE OF s) "
            f"UPDATE {messages} AS m SET text = v.text, thinking = v.thinking, updated_at = %s "
            "FROM v WHERE m.id = v.message_id AND m.session_id = v.session_id "
            "AND NOT m.is_final AND v.session_id IN (SELECT id FROM held)",
            params,
        )
        return cursor.rowcount


@idempotent
@transaction.atomic
def node_complete(
    *,
    session_id: Any,
    fence: int,
    node_id: str,
    agent_id: str,
    round: int,
    model: str,
    message_id: int,
    text: str,
    thinking: str,
    input_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    output_tokens: int,
    reasoning_tokens: int = 0,
    estimated: bool = False,
    cost_usd: Decimal | None,
    price: dict[str, str] | None = None,
    price_source: str = "",
) -> None:
    """Node done: final message, output for downstream nodes, usage row (tokens by type and
    the price charged, so a later price change never rewrites it), live session totals."""
    session = lock_run(session_id, fence)
    node = locked_node(session_id, node_id)
    close_message(message_id, text=text, thinking=thinking)
    tokens = {
        "input_tokens": input_tokens, "cached_input_tokens": cached_input_tokens,
        "cache_write_tokens": cache_write_tokens, "output_tokens": output_tokens,
        "reasoning_tokens": reasoning_tokens,
    }
    # The session row is locked: no other writer can insert this row meanwhile, so an
    # UPDATE and an INSERT if it found none (``update_or_create`` adds a SELECT … FOR UPDATE
    # and two savepoints: 6 statements instead of 2).
    usage = {
        "agent_id": agent_id, "model": model, **tokens, "estimated": estimated,
        "cost_usd": cost_usd, "price": price or {}, "price_source": price_source,
    }
    if not TokenUsage.objects.filter(session=session, node_id=node_id, round=round).update(**usage):
        TokenUsage.objects.create(session=session, node_id=node_id, round=round, **usage)
    node.status = NodeStatus.COMPLETED
    node.output = text
    node.finished_at = timezone.now()
    node.save(update_fields=["status", "output", "finished_at"])
    totals = apply_session_totals(session)
    recount_nodes(session)
    session.save(update_fields=[*totals, "nodes_completed", "nodes_failed", "updated_at"])
    publish_usage(session=session, node_id=node_id, agent_id=agent_id, model=model, final=True)
    node_state_event(session.pk, node)
    observed.node_ended(node=node, message_id=message_id, model=model, tokens=tokens,
                        cost_usd=cost_usd)


@idempotent
@transaction.atomic
def node_fail(
    *, session_id: Any, fence: int, node_id: str, error: str, code: str,
    message_id: int | None, text: str = "", thinking: str = "",
) -> None:
    session = lock_run(session_id, fence)
    node = locked_node(session_id, node_id)
    close_message(message_id, text=text, thinking=thinking)
    error = error[:MAX_ERROR]
    node.status = NodeStatus.FAILED
    node.error = error
    node.finished_at = timezone.now()
    node.save(update_fields=["status", "error", "finished_at"])
    recount_nodes(session)
    session.save(update_fields=["nodes_completed", "nodes_failed", "updated_at"])
    publish_sync(
        session_id=session.pk, event=EventName.ERROR, node_id=node_id,
        data={"node_id": node_id, "error": error, "code": code},
    )
    node_state_event(session.pk, node, error=error)
    observed.node_ended(node=node, message_id=message_id)


@idempotent
@transaction.atomic
def node_stopped(
    *, session_id: Any, fence: int, node_id: str, message_id: int | None, text: str = "",
    thinking: str = "",
) -> None:
    lock_run(session_id, fence)
    node = locked_node(session_id, node_id)
    close_message(message_id, text=text, thinking=thinking)
    if node.status in FINAL_NODE_STATUSES:
        return
    node.status = NodeStatus.STOPPED
    node.finished_at = timezone.now()
    node.save(update_fields=["status", "finished_at"])
    node_state_event(session_id, node)


@idempotent
@transaction.atomic
def nodes_skip(*, session_id: Any, fence: int, node_ids: list[str], reason: str) -> None:
    """Mark nodes that will never run (a dependency failed); a review still waiting counts."""
    lock_run(session_id, fence)
    for node_id in node_ids:
        node = locked_node(session_id, node_id)
        if node.status not in (NodeStatus.PENDING, NodeStatus.WAITING_REVIEW):
            continue
        node.status = NodeStatus.SKIPPED
        node.error = reason
        node.finished_at = timezone.now()
        node.save(update_fields=["status", "error", "finished_at"])
        node_state_event(session_id, node, error=reason)
    HumanReview.objects.filter(
        session_id=session_id, node_id__in=node_ids, status=ReviewStatus.PENDING
    ).update(status=ReviewStatus.CANCELLED)
