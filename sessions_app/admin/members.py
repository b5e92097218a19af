"""Members of a session (an inline on the session) and share links, in the admin.

The inline's rows are not saved by the admin's formset: each added, changed or deleted row is
a call to the member services (``SessionAdmin.save_formset`` hands them to
``save_members``), so an admin change is checked by the same rules, logged as the same
``member_changed`` event and closes the member's sockets exactly like a change made in the
room. Links are made in the room (their token is shown once, to whoever made it); here they
are listed with who joined through them, and revoked.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from realtime.vocabulary import MEMBER_ROLES, Role
from sessions_app import services
from sessions_app.access import can_manage_members
from sessions_app.admin.common import BOTH_LOCATIONS, ReadOnlyInline, can_view_sessions
from sessions_app.models import Session, SessionShare, ShareLink, ShareLinkJoin

ROLE_CHOICES = [(role.value, role.label) for role in Role if role in MEMBER_ROLES]


class MemberForm(forms.ModelForm):
    role = forms.ChoiceField(choices=ROLE_CHOICES)

    class Meta:
        model = SessionShare
        fields = ("user",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["role"].initial = self.instance.role
            self.fields["user"].disabled = True  # another user is another member


class MemberInline(admin.TabularInline):
    model = SessionShare
    form = MemberForm
    verbose_name = "member"
    verbose_name_plural = "members"
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("user",)
    extra = 0

    def _may_manage(self, request: HttpRequest, obj: Session | None) -> bool:
        return obj is not None and can_manage_members(user=request.user, session=obj)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_view_sessions(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_manage(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_manage(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_manage(request, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[SessionShare]:
        return super().get_queryset(request).select_related("user").order_by("user__username")


def save_members(request: HttpRequest, session: Session, formset: Any) -> None:
    """Each row's change through the member services; a refused one is reported, the others
    still apply (each service is its own transaction)."""
    # What the admin's change message reads from a saved formset: the session's event log
    # (member_changed) is the record of these changes.
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
    calls = []
    for form in formset.deleted_forms:
        if form.instance.pk:
            calls.append(lambda f=form: services.member_remove(
                session_id=session.pk, actor=request.user, username=f.instance.user.get_username()))
    for form in formset.forms:
        if form in formset.deleted_forms or not form.has_changed():
            continue
        role = form.cleaned_data["role"]
        if form.instance.pk:
            calls.append(lambda f=form, r=role: services.member_set_role(
                session_id=session.pk, actor=request.user,
                username=f.instance.user.get_username(), role=r))
        elif form.cleaned_data.get("user") is not None:
            calls.append(lambda f=form, r=role: services.member_add(
                session_id=session.pk, actor=request.user,
                username=f.cleaned_data["user"].get_username(), role=r))
    for call in calls:
        try:
            call()
        except services.ServiceError as exc:
            messages.error(request, f"Members: {exc.message}.")


class ShareLinkJoinInline(ReadOnlyInline):
    model = ShareLinkJoin
    verbose_name = "joined"
    verbose_name_plural = "who joined through this link"
    fields = ("user", "role", "joined_at")
    ordering_fields = ("joined_at", "id")
    related = ("user",)


@admin.register(ShareLink)
class ShareLinkAdmin(admin.ModelAdmin):
    list_display = ("__str__", "session", "role", "created_by", "created_at", "expires_at",
                    "uses_column", "state")
    list_filter = ("role", "created_at")
    list_select_related = ("session", "created_by")
    search_fields = ("session__title", "session__id__exact")
    fields = ("session", "role", "created_by", "created_at", "expires_at", "max_uses", "uses",
              "revoked_at", "state")
    readonly_fields = fields
    inlines = (ShareLinkJoinInline,)
    actions = ("revoke_links",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made in the room, where the token is shown once

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the list of who joined stays

    @admin.display(description="uses")
    def uses_column(self, obj: ShareLink) -> str:
        return f"{obj.uses} / {obj.max_uses}" if obj.max_uses else str(obj.uses)

    @admin.display(description="state")
    def state(self, obj: ShareLink) -> str:
        return obj.unusable_because(timezone.now()) or "usable"

    @admin.action(description="Revoke selected links", permissions=["change"], location=BOTH_LOCATIONS)
    def revoke_links(self, request: HttpRequest, queryset: QuerySet[ShareLink]) -> None:
        done = 0
        for link in queryset:
            try:
                services.share_link_revoke(link_id=link.pk, actor=request.user)
            except services.ServiceError as exc:
                self.message_user(request, f"{link}: {exc.message}.", messages.WARNING)
            else:
                done += 1
        if done:
            self.message_user(request, f"Revoked {done} link(s).", messages.SUCCESS)
