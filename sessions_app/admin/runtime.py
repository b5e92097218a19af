"""Cross-session lists of runtime rows (events, messages, usage, nodes, reviews, command
receipts), read-only; ``?session=<uuid>`` narrows one to a session."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from realtime.models import SessionEvent
from sessions_app.admin.common import EventTypeFilter, ReadOnlyPermissions, SessionFilter
from sessions_app.models import CommandReceipt, HumanReview, Message, NodeState, Session, TokenUsage


class RuntimeAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    """Cross-session lists of runtime rows; ?session=<uuid> narrows to one session."""

    list_per_page = 100
    show_full_result_count = False
    # Facet counts are one COUNT per choice over tables that grow with every run.
    show_facets = admin.ShowFacets.NEVER
    list_select_related = ("session",)
    actions = None

    @admin.display(description="session", ordering="session__created_at")
    def session_link(self, obj: Any) -> str:
        url = reverse("admin:sessions_app_session_change", args=[obj.session_id])
        return format_html('<a href="{}">{}</a>', url, self.session_title(obj))

    def session_title(self, obj: Any) -> str:
        return obj.session.title


@admin.register(SessionEvent)
class SessionEventAdmin(RuntimeAdmin):
    """The event log, one page at a time (a session may log tens of thousands of events)."""

    list_display = ("seq", "event", "node_id", "at", "data_preview", "session_link")
    list_display_links = ("seq",)
    list_filter = (SessionFilter, EventTypeFilter)
    list_select_related = ()

    def get_queryset(self, request: HttpRequest) -> QuerySet[SessionEvent]:
        # The log belongs to realtime, which knows nothing of titles: one subquery a page.
        title = Session.objects.filter(pk=OuterRef("session_id")).values("title")[:1]
        return super().get_queryset(request).annotate(session_title_=Subquery(title))

    def session_title(self, obj: Any) -> str:
        return obj.session_title_ or "(deleted session)"

    def get_ordering(self, request: HttpRequest) -> Sequence[str]:
        # In seq order within a session (the unique index serves it); newest first overall.
        if request.GET.get(SessionFilter.parameter_name):
            return ("session_id", "seq")
        return ("-id",)

    @admin.display(description="at", ordering="seq")
    def at(self, obj: SessionEvent) -> str:
        # Events come in bursts: milliseconds tell them apart, the default format does not.
        return timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    @admin.display(description="data")
    def data_preview(self, obj: SessionEvent) -> str:
        text = json.dumps(obj.data, ensure_ascii=False)
        return text if len(text) <= 160 else f"{text[:160]}…"


@admin.register(Message)
class MessageAdmin(RuntimeAdmin):
    list_display = ("created_at", "kind", "agent_id", "user", "node_id", "round", "excerpt",
                    "session_link")
    list_filter = (SessionFilter, "kind", "is_final")
    list_select_related = ("session", "user")
    search_fields = ("text",)

    def get_ordering(self, request: HttpRequest) -> Sequence[str]:
        return ("created_at", "id") if request.GET.get("session") else ("-id",)

    @admin.display(description="text")
    def excerpt(self, obj: Message) -> str:
        return obj.text if len(obj.text) <= 120 else f"{obj.text[:120]}…"


@admin.register(TokenUsage)
class TokenUsageAdmin(RuntimeAdmin):
    list_display = ("created_at", "node_id", "agent_id", "model", "round", "input_tokens",
                    "cached_input_tokens", "cache_write_tokens", "output_tokens",
                    "reasoning_tokens", "cost", "price_source", "session_link")
    list_filter = (SessionFilter, "model", "price_source")
    ordering = ("-id",)

    @admin.display(description="cost (USD)", ordering="cost_usd")
    def cost(self, obj: TokenUsage) -> str:
        return "price unknown" if obj.cost_usd is None else f"${obj.cost_usd:.6f}"


@admin.register(NodeState)
class NodeStateAdmin(RuntimeAdmin):
    list_display = ("node_id", "agent_id", "status", "rounds", "started_at", "finished_at",
                    "session_link")
    list_filter = (SessionFilter, "status")
    ordering = ("-id",)


@admin.register(HumanReview)
class HumanReviewAdmin(RuntimeAdmin):
    list_display = ("node_id", "round", "status", "decision", "decided_by", "decided_at",
                    "session_link")
    list_filter = (SessionFilter, "status", "decision")
    list_select_related = ("session", "decided_by")
    ordering = ("-id",)


@admin.register(CommandReceipt)
class CommandReceiptAdmin(RuntimeAdmin):
    list_display = ("created_at", "cmd", "command_id", "user", "session_link")
    list_filter = (SessionFilter, "cmd")
    list_select_related = ("session", "user")
    ordering = ("-id",)
