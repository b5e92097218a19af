"""Token usage and cost as they accrue: the live ``token_usage`` events and the session totals.

Usage rows (``TokenUsage``, one per node and round) are written when a node completes; while
a long node streams, its usage so far is announced every ``USAGE_INTERVAL_SECONDS`` without a
row, so a take-over can never count a node twice. Tokens are counted by type
(``realtime.vocabulary.TokenType``: cached input and cache writes are part of input,
reasoning part of output). A cost is None when its model has no price: the session's cost
then sums the priced usage and ``price_unknown`` says that some is missing (never $0).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, Sum

from realtime.publisher import publish_many_sync, publish_sync
from realtime.vocabulary import EventName
from sessions_app.models import ZERO, Session, TokenUsage
from sessions_app.services.leases import lock_run
from sessions_app.services.receipts import idempotent
from workflows.providers.base import TOKEN_FIELDS

# The session columns ``session_totals`` fills.
TOTAL_FIELDS = [*TOKEN_FIELDS, "cost_usd", "price_unknown"]


def _sums(query: Any) -> dict[str, Any]:
    totals = query.aggregate(
        **{name: Sum(name) for name in TOKEN_FIELDS},
        cost=Sum("cost_usd"), unpriced=Count("pk", filter=Q(cost_usd__isnull=True)),
    )
    sums: dict[str, Any] = {name: totals[name] or 0 for name in TOKEN_FIELDS}
    sums["cost_usd"] = totals["cost"] or ZERO
    sums["price_unknown"] = bool(totals["unpriced"])
    return sums


def session_totals(session: Session) -> dict[str, Any]:
    """Every token type, the cost of the priced usage and ``price_unknown``, summed over the
    session's own usage rows (the Session columns of the same names; a fork's rows inherited
    from its parent were spent there, not here)."""
    return _sums(TokenUsage.objects.filter(session=session, inherited=False))


def apply_session_totals(session: Session) -> list[str]:
    """Set the session's totals from its usage rows; the fields to save."""
    for name, value in session_totals(session).items():
        setattr(session, name, value)
    return TOTAL_FIELDS


def publish_usage(
    *, session: Session, node_id: str, agent_id: str, model: str, final: bool,
    more: dict[str, Any] | None = None,
) -> None:
    """token_usage: the node's stored rows plus ``more`` (the live part of a running node:
    ``<type>_tokens`` and ``cost_usd``, None when its price is unknown)."""
    done = _sums(TokenUsage.objects.filter(session=session, node_id=node_id))
    data = _usage_data(session=session, node_id=node_id, agent_id=agent_id, model=model,
                       final=final, done=done, more=more or {})
    publish_sync(session_id=session.pk, event=EventName.TOKEN_USAGE, node_id=node_id, data=data)


def _usage_data(
    *, session: Session, node_id: str, agent_id: str, model: str, final: bool,
    done: dict[str, Any], more: dict[str, Any],
) -> dict[str, Any]:
    live_cost: Decimal | None = more.get("cost_usd", ZERO)
    node_unknown = done["price_unknown"] or live_cost is None
    data: dict[str, Any] = {"node_id": node_id, "agent_id": agent_id, "model": model}
    for name in TOKEN_FIELDS:
        data[name] = done[name] + more.get(name, 0)
    data["estimated_cost_usd"] = None if node_unknown else float(done["cost_usd"] + (live_cost or ZERO))
    data["final"] = final
    for name in TOKEN_FIELDS:
        data[f"session_{name}"] = getattr(session, name) + more.get(name, 0)
    data["session_cost_usd"] = float(session.cost_usd + (live_cost or ZERO))
    data["session_price_unknown"] = session.price_unknown or live_cost is None
    return data


@idempotent
@transaction.atomic
def usage_progress(
    *,
    session_id: Any,
    fence: int,
    node_id: str,
    agent_id: str,
    model: str,
    input_tokens: int,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
    output_tokens: int,
    reasoning_tokens: int = 0,
    cost_usd: Decimal | None,
) -> None:
    """Periodic usage of a long node (not stored as a usage row until the node ends)."""
    session = lock_run(session_id, fence)
    publish_usage(
        session=session, node_id=node_id, agent_id=agent_id, model=model, final=False,
        more={
            "input_tokens": input_tokens, "cached_input_tokens": cached_input_tokens,
            "cache_write_tokens": cache_write_tokens, "output_tokens": output_tokens,
            "reasoning_tokens": reasoning_tokens, "cost_usd": cost_usd,
        },
    )


@transaction.atomic
def usage_progress_many(*, reports: list[dict[str, Any]]) -> int:
    """``usage_progress`` of many running nodes (every agent of one executor) in one
    transaction: the sessions locked in id order, one aggregate for every node's stored
    rows, the events in one insert. A report whose runner lost its lease is skipped (its
    runner learns it at its next own write). Returns how many events were logged.

    Each report is ``{"session_id", "fence", "node_id", "agent_id", "model",
    "<type>_tokens"..., "cost_usd"}``. One write per agent every ``USAGE_INTERVAL_SECONDS``
    was most of what a worker with hundreds of agents asked of its database thread."""
    sessions = {
        str(session.pk): session
        for session in Session.objects.select_for_update().defer("workflow_definition")
        .filter(pk__in=sorted({str(r["session_id"]) for r in reports})).order_by("pk")
    }
    live = [r for r in reports
            if (s := sessions.get(str(r["session_id"]))) is not None
            and s.lease_generation == r["fence"]]
    if not live:
        return 0
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    rows = (TokenUsage.objects.filter(session_id__in={str(r["session_id"]) for r in live},
                                      node_id__in={r["node_id"] for r in live})
            .values("session_id", "node_id")
            .annotate(**{name: Sum(name) for name in TOKEN_FIELDS}, cost=Sum("cost_usd"),
                      unpriced=Count("pk", filter=Q(cost_usd__isnull=True))))
    for row in rows:
        sums: dict[str, Any] = {name: row[name] or 0 for name in TOKEN_FIELDS}
        sums["cost_usd"] = row["cost"] or ZERO
        sums["price_unknown"] = bool(row["unpriced"])
        stored[(str(row["session_id"]), row["node_id"])] = sums
    nothing = {**dict.fromkeys(TOKEN_FIELDS, 0), "cost_usd": ZERO, "price_unknown": False}
    events = []
    for report in live:
        sid = str(report["session_id"])
        more = {name: report.get(name, 0) for name in TOKEN_FIELDS}
        more["cost_usd"] = report["cost_usd"]
        data = _usage_data(session=sessions[sid], node_id=report["node_id"],
                           agent_id=report["agent_id"], model=report["model"], final=False,
                           done=stored.get((sid, report["node_id"]), nothing), more=more)
        events.append({"session_id": sid, "event": EventName.TOKEN_USAGE,
                       "node_id": report["node_id"], "data": data})
    return publish_many_sync(events)
