"""Cost and token totals of a set of sessions, per day and per workflow.

Works on any Session queryset, so the admin summary page can hand it exactly the sessions
its changelist shows (same filters, same search). Ordering and extra annotations of the
incoming queryset are cleared first: a leftover ORDER BY column would otherwise end up in
the GROUP BY and split the groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate

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

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _metrics() -> dict[str, Any]:
    return {
        "n": Count("pk"),
        "tin": Sum("input_tokens", default=0),
        "tout": Sum("output_tokens", default=0),
        "cost": Sum("cost_usd", default=Decimal("0")),
    }


def _money(value: Any) -> Decimal:
    # SQLite sums decimals as floats; round back to the column's six places.
    return Decimal(str(value)).quantize(MICRO_DOLLAR)


def _row(key: Any, values: dict[str, Any]) -> Row:
    return Row(
        key=key, sessions=values["n"], input_tokens=values["tin"],
        output_tokens=values["tout"], cost_usd=_money(values["cost"]),
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


def summary(queryset: QuerySet[Session]) -> dict[str, Any]:
    """Everything the summary page shows, in three queries."""
    return {
        "totals": totals(queryset),
        "per_day": per_day(queryset),
        "per_workflow": per_workflow(queryset),
    }
