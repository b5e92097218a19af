"""The parts of a session's admin page, read-only: its nodes, usage, reviews, tool calls and
transcript (inlines), and the lineage filter of the list. The page itself is ``sessions``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from sessions_app.admin.common import ReadOnlyInline
from sessions_app.models import HumanReview, Message, NodeState, Session, TokenUsage, ToolCall


class NodeStateInline(ReadOnlyInline):
    model = NodeState
    verbose_name_plural = "node states"
    fields = (
        "node_id", "node_type", "agent_id", "status", "rounds", "started_at", "finished_at",
        "error", "inherited", "fork_from_here",
    )

    @admin.display(description="fork")
    def fork_from_here(self, obj: NodeState) -> str:
        """The fork page (it checks who may fork, like the room)."""
        url = reverse("sessions:fork", kwargs={"session_id": obj.session_id})
        return format_html('<a href="{}?node={}">Fork from here</a>', url, obj.node_id)


class LineageFilter(admin.SimpleListFilter):
    """Forks, sessions that were forked, or neither (docs/replay.md)."""

    title = "lineage"
    parameter_name = "lineage"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("fork", "forks"), ("forked", "forked (has forks)"), ("original", "not a fork")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Session]) -> QuerySet[Session]:
        if self.value() == "fork":
            return queryset.filter(parent__isnull=False)
        if self.value() == "forked":
            return queryset.filter(forks__isnull=False).distinct()
        if self.value() == "original":
            return queryset.filter(parent__isnull=True)
        return queryset


class TokenUsageInline(ReadOnlyInline):
    model = TokenUsage
    verbose_name_plural = "token usage (cached and cache writes are part of input, reasoning of output)"
    fields = (
        "node_id", "agent_id", "model", "round", "input_tokens", "cached_input_tokens",
        "cache_write_tokens", "output_tokens", "reasoning_tokens", "cost", "price_charged",
        "created_at",
    )

    @admin.display(description="cost (USD)")
    def cost(self, obj: TokenUsage) -> str:
        return usd_or_unknown(obj.cost_usd) + (" (estimated usage)" if obj.estimated else "")

    @admin.display(description="price charged (USD per million)")
    def price_charged(self, obj: TokenUsage) -> str:
        if not obj.price:
            return "—"
        return "; ".join(f"{kind} {value}" for kind, value in obj.price.items()) + f" — {obj.price_source}"


def usd_or_unknown(value: Any) -> str:
    """A cost as the room shows it: "price unknown" instead of a silent $0."""
    return "price unknown" if value is None else f"${value:.6f}"


class HumanReviewInline(ReadOnlyInline):
    model = HumanReview
    fields = (
        "node_id", "reviewed_node_id", "round", "reason", "status", "decision", "comment",
        "decided_by", "decided_at", "deadline",
    )
    ordering_fields = ("created_at", "id")
    related = ("decided_by",)


class ToolCallInline(ReadOnlyInline):
    model = ToolCall
    verbose_name_plural = "tool calls"
    fields = (
        "node_id", "round", "tool", "server", "arguments", "status", "result", "error",
        "duration_ms", "started_at", "finished_at",
    )
    ordering_fields = ("started_at", "id")


class TranscriptInline(ReadOnlyInline):
    """Messages as a transcript: each answer with its thinking in a separate, folded box."""

    model = Message
    verbose_name = "message"
    verbose_name_plural = "transcript"
    template = "admin/sessions_app/session/transcript_inline.html"
    fields = ("kind", "agent_id", "user", "node_id", "round", "is_final", "created_at")
    ordering_fields = ("created_at", "id")
    related = ("user",)
