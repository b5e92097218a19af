"""Cost and token totals of a set of sessions, per day, per user (the owner) and per workflow:
every token type, how many sessions had usage without a price, and where their budgets stand.

Works on any Session queryset, so the admin summary page can hand it exactly the sessions
its changelist shows (same filters, same search). Ordering and extra annotations of the
incoming queryset are cleared first: a leftover ORDER BY column would otherwise end up in
the GROUP BY and split the groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate

from realtime.vocabulary import BudgetState
from sessions_app.models import Session

MICRO_DOLLAR = Decimal("0.000001")


@dataclass(frozen=True)
class Row:
    """Totals of one group (a day, a workflow or everything)."""

    key: Any
    sessions: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    cached_input_tokens: int = 0  # of input
    cache_write_tokens: int = 0  # of input
    reasoning_tokens: int = 0  # of output
    price_unknown: int = 0  # sessions with usage whose price is unknown (not in cost_usd)
    budgeted: int = 0  # sessions with a budget
    budget_warning: int = 0  # ... whose spend passed the warning threshold
    budget_reached: int = 0  # ... that reached it (held, raised or stopped)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


_FIELDS = {
    "tin": "input_tokens", "tcached": "cached_input_tokens", "twrite": "cache_write_tokens",
    "tout": "output_tokens", "treason": "reasoning_tokens",
}


def _metrics() -> dict[str, Any]:
    return {
        "n": Count("pk"),
        **{key: Sum(name, default=0) for key, name in _FIELDS.items()},
        "cost": Sum("cost_usd", default=Decimal("0")),
        "unpriced": Count("pk", filter=Q(price_unknown=True)),
        "budgeted": Count("pk", filter=Q(budget_usd__isnull=False)),
        "warned": Count("pk", filter=Q(budget_usd__isnull=False, budget_state=BudgetState.WARNING)),
        "reached": Count("pk", filter=Q(budget_usd__isnull=False, budget_state=BudgetState.REACHED)),
    }


def _money(value: Any) -> Decimal:
    # SQLite sums decimals as floats; round back to the column's six places.
    return Decimal(str(value)).quantize(MICRO_DOLLAR)


def _row(key: Any, values: dict[str, Any]) -> Row:
    return Row(
        key=key, sessions=values["n"], input_tokens=values["tin"],
        output_tokens=values["tout"], cost_usd=_money(values["cost"]),
        cached_input_tokens=values["tcached"], cache_write_tokens=values["twrite"],
        reasoning_tokens=values["treason"], price_unknown=values["unpriced"],
        budgeted=values["budgeted"], budget_warning=values["warned"],
        budget_reached=values["reached"],
    )


def _plain(queryset: QuerySet[Session]) -> QuerySet[Session]:
    # Keep the filtering (WHERE) but none of the changelist's ordering or annotations.
    return Session.objects.filter(pk__in=queryset.order_by().values("pk"))


def totals(queryset: QuerySet[Session]) -> Row:
    return _row(None, _plain(queryset).aggregate(**_metrics()))


def per_day(queryset: QuerySet[Session]) -> list[Row]:
    """Newest day first; days are calendar days of created_at in the current time zone."""
    rows = (
        _plain(queryset)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(**_metrics())
        .order_by("-day")
    )
    return [_row(r["day"], r) for r in rows]


def per_workflow(queryset: QuerySet[Session]) -> list[Row]:
    """Most expensive workflow first."""
    rows = (
        _plain(queryset)
        .values("workflow_slug")
        .annotate(**_metrics())
        .order_by("-cost", "workflow_slug")
    )
    return [_row(r["workflow_slug"], r) for r in rows]


def per_user(queryset: QuerySet[Session]) -> list[Row]:
    """Spend per owner (who started the sessions), most expensive first."""
    rows = (
        _plain(queryset)
        .values("owner__username")
        .annotate(**_metrics())
        .order_by("-cost", "owner__username")
    )
    return [_row(r["owner__username"], r) for r in rows]


def summary(queryset: QuerySet[Session]) -> dict[str, Any]:
    """Everything the summary page shows, in four queries."""
    return {
        "totals": totals(queryset),
        "per_day": per_day(queryset),
        "per_user": per_user(queryset),
        "per_workflow": per_workflow(queryset),
    }
