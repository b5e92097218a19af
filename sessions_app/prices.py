"""Reads for prices and budgets: the admin's model prices as ``workflows.pricing`` takes them,
a model's price now, the budget a runner starts from, and which models have no price.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import DatabaseError
from django.utils import timezone

from realtime.vocabulary import TokenType
from sessions_app.models import HumanReview, ModelPrice, Session
from workflows import pricing
from workflows.budget import BUDGET_REVIEW_KEY, DEFAULT_WARN_AT, BudgetStart
from workflows.definitions import WorkflowDefinition
from workflows.vocabulary import ReviewStatus

_COLUMNS = {
    TokenType.INPUT: "input_per_million",
    TokenType.CACHED_INPUT: "cached_input_per_million",
    TokenType.CACHE_WRITE: "cache_write_per_million",
    TokenType.OUTPUT: "output_per_million",
    TokenType.REASONING: "reasoning_per_million",
}


def as_override(row: ModelPrice) -> pricing.PriceOverride:
    return pricing.PriceOverride(
        model=row.model,
        per_million={kind: getattr(row, column) for kind, column in _COLUMNS.items()
                     if getattr(row, column) is not None},
        valid_from=row.valid_from, valid_until=row.valid_until,
        source=f"admin: model price #{row.pk}" + (f" ({row.note})" if row.note else ""),
    )


def price_overrides(*, models: Iterable[str] | None = None) -> list[pricing.PriceOverride]:
    rows = ModelPrice.objects.all()
    if models is not None:
        rows = rows.filter(model__in=list(models))
    return [as_override(row) for row in rows]


def model_price(*, model: str, at: datetime | None = None) -> pricing.Price | None:
    """The price of ``model`` in force at ``at`` (now): the admin's first."""
    return pricing.resolve(model, at=at or timezone.now(), overrides=price_overrides(models=[model]))


def run_budget(*, session_id: Any) -> Decimal | None:
    return Session.objects.values_list("budget_usd", flat=True).get(pk=session_id)


def budget_start(session: Session) -> BudgetStart:
    """What a runner needs to guard the session's budget (a pending request included)."""
    if session.budget_usd is None:  # no budget: nothing to guard, no request can be pending
        return BudgetStart(budget_usd=None, spent_usd=session.cost_usd, state=session.budget_state)
    definition = session.workflow_definition.get("budget") or {}
    pending = (
        HumanReview.objects.filter(session=session, node_id="", call_id=BUDGET_REVIEW_KEY,
                                   status=ReviewStatus.PENDING)
        .values_list("round", flat=True).first()
    )
    return BudgetStart(
        budget_usd=session.budget_usd, spent_usd=session.cost_usd, state=session.budget_state,
        warn_at=Decimal(str(definition.get("warn_at") or DEFAULT_WARN_AT)),
        default_decision=definition.get("default_decision") or BudgetStart.default_decision,
        pending_round=pending,
    )


def unpriced_models(
    definitions: Iterable[WorkflowDefinition], *, extra: Iterable[str] = ()
) -> dict[str, list[str]]:
    """Model -> the workflows (or settings) naming it, for every model with no price now.
    The admin's prices count when the database can be read (not before ``migrate``)."""
    try:
        overrides = price_overrides()
    except (DatabaseError, AssertionError):  # no table before migrate; a test without a database
        overrides = []
    now = timezone.now()
    used: dict[str, list[str]] = {}
    for definition in definitions:
        for agent in definition.agents.values():
            used.setdefault(agent.model, []).append(definition.slug)
    for name in extra:
        used.setdefault(name, []).append("OPENAI_MODEL")
    return {model: sorted(set(where)) for model, where in used.items()
            if not pricing.known_model(model, at=now, overrides=overrides)}


def suggested_models(*, also: Iterable[str] = ()) -> list[str]:
    """Models to offer in a form (a fork's other model): the offline ones, those with an
    admin price, and ``also`` (the workflow's own). Any other name is allowed too: a model
    genai-prices knows is priced, an unknown one runs as "price unknown"."""
    names = set(pricing.HOUSE_PRICES) | set(ModelPrice.objects.values_list("model", flat=True))
    return sorted(names | {name for name in also if name})
