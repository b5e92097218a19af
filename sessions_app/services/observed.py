"""What the run services report to Prometheus (``realtime.metrics``), once each write commits.

Counted on commit, not when the service runs: a write that rolls back (a lost lease, a
database error the runner retries) never happened, and a retried write that finds its
receipt (``@idempotent``) does not run again, so nothing is counted twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction

from realtime import metrics
from realtime.vocabulary import TokenType
from sessions_app.models import Message, NodeState, Session


def run_ended(session: Session) -> None:
    """The run ended with the session's status (called once per run: see ``run_finish``)."""
    status, seconds = str(session.status), session.duration_seconds
    transaction.on_commit(lambda: metrics.run_finished(status=status, seconds=seconds))


def run_taken_over() -> None:
    transaction.on_commit(metrics.run_taken_over)


def node_ended(
    *, node: NodeState, message_id: int | None, model: str = "",
    tokens: dict[str, int] | None = None, cost_usd: Decimal | None = None,
) -> None:
    """An agent node's round completed or failed (``node.status``), with the usage it
    recorded (``<type>_tokens``; a cost of None: the price is unknown)."""
    fields: dict[str, Any] = {
        "status": str(node.status), "seconds": _round_seconds(node, message_id), "model": model,
        "tokens": {TokenType(name.removesuffix("_tokens")): count
                   for name, count in (tokens or {}).items()},
        "cost_usd": None if cost_usd is None else float(cost_usd),
    }
    transaction.on_commit(lambda: metrics.node_finished(**fields))


def _round_seconds(node: NodeState, message_id: int | None) -> float | None:
    """From this round's start (its transcript message is created by ``node_begin``) to the
    node's end; ``node.started_at`` is the first round's start, which would count the time a
    rejected draft waited for its review."""
    began: datetime | None = None
    if message_id is not None:
        began = Message.objects.filter(pk=message_id).values_list("created_at", flat=True).first()
    began = began or node.started_at
    if began is None or node.finished_at is None:
        return None
    return max(0.0, (node.finished_at - began).total_seconds())
