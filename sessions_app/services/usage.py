"""Token usage and cost as they accrue: the live ``token_usage`` events and the session totals.

Usage rows (``TokenUsage``, one per node and round) are written when a node completes; while
a long node streams, its usage so far is announced every ``USAGE_INTERVAL_SECONDS`` without a
row, so a take-over can never count a node twice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Sum

from realtime.publisher import publish_sync
from realtime.vocabulary import EventName
from sessions_app.models import ZERO, Session, TokenUsage
from sessions_app.services.leases import lock_run
from sessions_app.services.receipts import idempotent

NO_MORE = (0, 0, ZERO)


def _sums(query: Any) -> tuple[int, int, Decimal]:
    totals = query.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"))
    return totals["i"] or 0, totals["o"] or 0, totals["c"] or ZERO


def session_totals(session: Session) -> tuple[int, int, Decimal]:
    """(input tokens, output tokens, cost) summed over the session's own usage rows (a fork's
    rows inherited from its parent were spent there, not here)."""
    return _sums(TokenUsage.objects.filter(session=session, inherited=False))


def publish_usage(
    *, session: Session, node_id: str, agent_id: str, model: str, final: bool,
    more: tuple[int, int, Decimal] = NO_MORE,
) -> None:
    """token_usage: the node's stored rows plus ``more`` (the live part of a running node)."""
    done_in, done_out, done_cost = _sums(TokenUsage.objects.filter(session=session, node_id=node_id))
    more_in, more_out, more_cost = more
    publish_sync(
        session_id=session.pk,
        event=EventName.TOKEN_USAGE,
        node_id=node_id,
        data={
            "node_id": node_id,
            "agent_id": agent_id,
            "model": model,
            "input_tokens": done_in + more_in,
            "output_tokens": done_out + more_out,
            "estimated_cost_usd": float(done_cost + more_cost),
            "final": final,
            "session_input_tokens": session.input_tokens + more_in,
            "session_output_tokens": session.output_tokens + more_out,
            "session_cost_usd": float(session.cost_usd + more_cost),
        },
    )


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
    output_tokens: int,
    cost_usd: Decimal,
) -> None:
    """Periodic usage of a long node (not stored as a usage row until the node ends)."""
    session = lock_run(session_id, fence)
    publish_usage(
        session=session, node_id=node_id, agent_id=agent_id, model=model, final=False,
        more=(input_tokens, output_tokens, cost_usd),
    )
