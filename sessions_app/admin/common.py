"""What every admin screen of this app shares: who may view, the session filter, read-only
runtime rows, status badges."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.contrib.admin import ActionLocation
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from realtime import protocol
from sessions_app.models import Session, SessionStatus

BOTH_LOCATIONS = [ActionLocation.CHANGE_LIST, ActionLocation.CHANGE_FORM]

# Fixed colours per status; only these constants and the choice label reach the markup.
STATUS_COLOURS = {
    SessionStatus.CREATED: "#6c757d",
    SessionStatus.RUNNING: "#0d6efd",
    SessionStatus.PAUSED: "#b58100",
    SessionStatus.WAITING_REVIEW: "#6f42c1",
    SessionStatus.COMPLETED: "#198754",
    SessionStatus.FAILED: "#dc3545",
    SessionStatus.STOPPED: "#495057",
}


def can_view_sessions(request: HttpRequest) -> bool:
    """Viewing a session grants viewing everything recorded about it."""
    user = request.user
    return user.has_perm("sessions_app.view_session") or user.has_perm(
        "sessions_app.change_session"
    )


def parse_uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value).strip())
    except (TypeError, ValueError, AttributeError):
        return None


def status_badge_html(status: str, label: str) -> str:
    colour = STATUS_COLOURS.get(status, "#6c757d")
    return format_html(
        '<span class="session-status" style="background:{};color:#fff;padding:2px 8px;'
        'border-radius:10px;font-size:11px;white-space:nowrap">{}</span>',
        colour,
        label,
    )


# --------------------------------------------------------------------------- filters


class SessionFilter(admin.SimpleListFilter):
    """Narrows a runtime-row list to one session given by id (?session=<uuid>).

    Only the selected session is offered as a choice: listing every session would make
    the sidebar as long as the session table.
    """

    title = "session"
    parameter_name = "session"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        value = self.value()
        if not value:
            return []
        session_id = parse_uuid(value)
        title = (
            Session.objects.filter(pk=session_id).values_list("title", flat=True).first()
            if session_id
            else None
        )
        return [(value, title if title is not None else "(unknown session)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        session_id = parse_uuid(self.value())
        return queryset.filter(session_id=session_id) if session_id else queryset.none()


class EventTypeFilter(admin.SimpleListFilter):
    """The logged event names from the protocol (no DISTINCT over a huge table)."""

    title = "event"
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(name, name) for name in protocol.LOGGED_EVENTS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(event=self.value()) if self.value() else queryset


# --------------------------------------------------------------------------- read-only parts


class ReadOnlyPermissions:
    """Runtime rows are written by the engine only: no add, change or delete, ever."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_view_sessions(request)


class ReadOnlyInline(ReadOnlyPermissions, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False
    ordering_fields: Sequence[str] = ("id",)
    related: Sequence[str] = ()

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        return self.fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The models order by "session" first, which would join and sort by the parent.
        queryset = super().get_queryset(request).order_by(*self.ordering_fields)
        return queryset.select_related(*self.related) if self.related else queryset
