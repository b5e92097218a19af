"""The session screens: list with badges and filters, a session with its parts read-only,
exports, stop, and the cost summary.

The editable parts are a session's title and its members (``admin/members.py``). The title
is saved with ``update_fields`` so a rename can never overwrite counters (tokens, status) that
a runner advanced meanwhile. Stopping goes through ``services.session_stop`` so live viewers
see ``execution:stopped``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import DurationField, ExpressionWrapper, F, QuerySet
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from realtime.eventlog import head_seq
from sessions_app import services
from sessions_app.admin.common import (
    BOTH_LOCATIONS,
    status_badge_html,
)
from sessions_app.admin.export import (
    export_json,
    export_markdown,
    export_queryset,
    format_duration_seconds,
)
from sessions_app.admin.members import MemberInline, save_members
from sessions_app.admin.session_parts import (
    HumanReviewInline,
    LineageFilter,
    NodeStateInline,
    TokenUsageInline,
    ToolCallInline,
    TranscriptInline,
)
from sessions_app.admin.summary import summary
from sessions_app.models import (
    Session,
    SessionShare,
)


@admin.register(Session)
class SessionAdmin(admin.ModelAdmin):
    list_display = (
        "title", "owner_name", "workflow", "status_badge", "started", "duration",
        "nodes_done", "nodes_failed_column", "tokens_in", "tokens_out", "cost",
    )
    list_filter = (
        "status",
        "workflow_slug",
        ("owner", admin.RelatedOnlyFieldListFilter),
        LineageFilter,
        "created_at",
    )
    date_hierarchy = "created_at"
    search_fields = ("title", "owner__username", "id__exact", "tool_calls__tool")
    search_help_text = "Title, owner username, the full session id, or a tool an agent called."
    list_select_related = ("owner",)
    list_per_page = 50
    ordering = ("-created_at",)
    actions = ("export_as_json", "export_as_markdown", "stop_sessions")
    inlines = (MemberInline, NodeStateInline, TokenUsageInline, HumanReviewInline, ToolCallInline,
               TranscriptInline)
    change_list_template = "admin/sessions_app/session/change_list.html"
    fieldsets = (
        (None, {
            "fields": (
                "title", "owner", "workflow_slug", "status_badge", "meeting_room", "lineage",
                "event_log", "error",
            ),
        }),
        ("Totals", {
            "fields": (
                ("nodes_total", "nodes_completed", "nodes_failed"),
                ("input_tokens", "cached_input_tokens", "cache_write_tokens"),
                ("output_tokens", "reasoning_tokens"),
                ("cost_usd", "price_unknown"),
            ),
        }),
        ("Budget", {
            "fields": (("budget_usd", "budget_state"),),
            "description": "The run holds and asks a controller when its cost reaches the budget. "
            "A change here applies from the run's next start, take-over or budget decision.",
        }),
        ("Timing", {
            "fields": (("created_at", "started_at", "finished_at"), "duration"),
        }),
        ("Runner", {
            "classes": ("collapse",),
            "fields": (
                "run_requested", "lease_owner", "lease_expires_at", "logged_events", "updated_at",
            ),
        }),
        ("Workflow definition", {
            "classes": ("collapse",),
            "fields": ("workflow_definition",),
        }),
    )
    readonly_fields = (
        "owner", "workflow_slug", "status_badge", "meeting_room", "lineage", "event_log", "error",
        "nodes_total", "nodes_completed", "nodes_failed", "input_tokens", "output_tokens",
        "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "price_unknown",
        "budget_state", "cost_usd", "created_at", "started_at", "finished_at", "duration", "run_requested",
        "lease_owner", "lease_expires_at", "logged_events", "updated_at", "workflow_definition",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Session]:
        # A running session's duration so far ends at its last update, as on the model.
        elapsed = ExpressionWrapper(
            Coalesce("finished_at", "updated_at") - F("started_at"),
            output_field=DurationField(),
        )
        return super().get_queryset(request).annotate(elapsed=elapsed)

    # Sessions are created from a workflow by the app, and deleting one would cascade into
    # an event log of any size: neither belongs in a review tool.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Session, form: Any, change: bool) -> None:
        obj.save(update_fields=["title", "budget_usd", "updated_at"])

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is SessionShare:
            save_members(request, form.instance, formset)  # through the member services
        else:
            super().save_formset(request, form, formset, change)

    # ---- columns

    @admin.display(description="owner", ordering="owner__username")
    def owner_name(self, obj: Session) -> str:
        return obj.owner.get_username()

    @admin.display(description="workflow", ordering="workflow_slug")
    def workflow(self, obj: Session) -> str:
        return obj.workflow_slug

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Session) -> str | None:
        # Compact, sortable-looking timestamps keep the eleven columns on one screen.
        if obj.started_at is None:
            return None
        return f"{timezone.localtime(obj.started_at):%Y-%m-%d %H:%M}"

    @admin.display(description="nodes done", ordering="nodes_completed")
    def nodes_done(self, obj: Session) -> int:
        return obj.nodes_completed

    @admin.display(description="nodes failed", ordering="nodes_failed")
    def nodes_failed_column(self, obj: Session) -> int:
        return obj.nodes_failed

    @admin.display(description="tokens in", ordering="input_tokens")
    def tokens_in(self, obj: Session) -> int:
        return obj.input_tokens

    @admin.display(description="tokens out", ordering="output_tokens")
    def tokens_out(self, obj: Session) -> int:
        return obj.output_tokens

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Session) -> str:
        return status_badge_html(obj.status, obj.get_status_display())

    @admin.display(description="duration", ordering="elapsed")
    def duration(self, obj: Session) -> str:
        elapsed = getattr(obj, "elapsed", None)
        if elapsed is None:
            return format_duration_seconds(obj.duration_seconds)
        return format_duration_seconds(max(0.0, elapsed.total_seconds()))

    @admin.display(description="est. cost (USD)", ordering="cost_usd")
    def cost(self, obj: Session) -> str:
        return f"${obj.cost_usd:.4f}" + (" + price unknown" if obj.price_unknown else "")

    @admin.display(description="meeting room")
    def meeting_room(self, obj: Session) -> str:
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">Open the meeting room</a> · '
            '<a href="{}" target="_blank" rel="noopener">Replay</a>',
            obj.get_absolute_url(), reverse("sessions:replay", kwargs={"session_id": obj.pk}),
        )

    @admin.display(description="lineage")
    def lineage(self, obj: Session) -> str:
        """Parent (and the node it was forked at), compare, and the forks."""
        parts = []
        if obj.parent_id:
            change = reverse("admin:sessions_app_session_change", args=[obj.parent_id])
            compare = reverse("sessions:compare", kwargs={"session_id": obj.pk})
            parts.append(format_html(
                'fork of <a href="{}">{}</a> at <code>{}</code> (<a href="{}">compare</a>)',
                change, obj.parent.title if obj.parent else obj.parent_id, obj.fork_node_id, compare,
            ))
        forks = list(obj.forks.order_by("-created_at").values_list("pk", "title")[:20])
        if forks:
            parts.append(format_html(
                "forks: {}",
                format_html_join(", ", '<a href="{}">{}</a>', (
                    (reverse("admin:sessions_app_session_change", args=[pk]), title)
                    for pk, title in forks
                )),
            ))
        return format_html_join(" · ", "{}", ((p,) for p in parts)) if parts else "—"

    @admin.display(description="last seq")
    def logged_events(self, obj: Session) -> int:
        return head_seq(str(obj.pk))

    @admin.display(description="event log")
    def event_log(self, obj: Session) -> str:
        url = reverse("admin:realtime_sessionevent_changelist")
        return format_html(
            '<a href="{}?session={}">{} logged events</a> (paginated)', url, obj.pk,
            head_seq(str(obj.pk)),
        )

    # ---- actions

    @admin.action(
        description="Export transcript and usage (JSON)", permissions=["view"],
        location=BOTH_LOCATIONS,
    )
    def export_as_json(self, request: HttpRequest, queryset: QuerySet[Session]) -> HttpResponse:
        sessions = list(export_queryset(queryset))
        return _download(export_json(sessions), sessions, "json", "application/json")

    @admin.action(
        description="Export transcript and usage (Markdown)", permissions=["view"],
        location=BOTH_LOCATIONS,
    )
    def export_as_markdown(
        self, request: HttpRequest, queryset: QuerySet[Session]
    ) -> HttpResponse:
        sessions = list(export_queryset(queryset))
        return _download(export_markdown(sessions), sessions, "md", "text/markdown")

    @admin.action(
        description="Stop selected sessions", permissions=["change"], location=BOTH_LOCATIONS
    )
    def stop_sessions(self, request: HttpRequest, queryset: QuerySet[Session]) -> None:
        stopped: list[str] = []
        refused: list[str] = []
        for session in queryset.order_by("created_at"):
            try:
                # Each stop is its own transaction: one refusal does not undo the others.
                services.session_stop(session_id=session.pk, user=request.user)
            except services.ServiceError as exc:
                refused.append(f"“{session.title}” ({exc.message})")
            else:
                stopped.append(f"“{session.title}”")
                self.log_change(request, session, "Stopped from the admin.")
        if stopped:
            self.message_user(
                request, f"Stopped {len(stopped)}: {', '.join(stopped)}.", messages.SUCCESS
            )
        if refused:
            self.message_user(
                request,
                f"Could not stop {len(refused)}: {'; '.join(refused)}.",
                messages.WARNING,
            )

    # ---- cost summary

    def get_urls(self) -> list[URLPattern]:
        summary_url = path(
            "summary/",
            self.admin_site.admin_view(self.summary_view),
            name="sessions_app_session_summary",
        )
        return [summary_url, *super().get_urls()]

    def summary_view(self, request: HttpRequest) -> HttpResponse:
        """Totals for exactly the sessions the changelist shows with the same query string."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(reverse("admin:sessions_app_session_summary"))
        queryset = changelist.get_queryset(request)
        query = request.GET.urlencode()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Cost summary",
            "summary": summary(queryset),
            "active_filters": _active_filters(changelist, request),
            "changelist_url": reverse("admin:sessions_app_session_changelist")
            + (f"?{query}" if query else ""),
        }
        return TemplateResponse(request, "admin/sessions_app/session/summary.html", context)


def _active_filters(changelist: Any, request: HttpRequest) -> list[tuple[str, str]]:
    """(what, value) pairs describing the filters in force, for the summary heading."""
    active: list[tuple[str, str]] = []
    described: set[str] = set()
    for spec in changelist.filter_specs:
        described.update(spec.expected_parameters())
        for index, choice in enumerate(spec.choices(changelist)):
            if index and choice.get("selected"):
                active.append((str(spec.title), str(choice["display"])))
    # Lookups typed into the URL rather than picked in the sidebar still filter the list.
    for key, values in changelist.get_filters_params().items():
        if key not in described:
            value = values[-1] if isinstance(values, list) else values
            active.append((key.replace("__", " "), str(value)))
    if changelist.query:
        active.append(("search", changelist.query))
    return active


def _download(
    body: str, sessions: list[Session], extension: str, content_type: str
) -> HttpResponse:
    if len(sessions) == 1:
        name = f"session-{sessions[0].pk}.{extension}"
    else:
        name = f"sessions-{timezone.now():%Y%m%d-%H%M%S}.{extension}"
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
